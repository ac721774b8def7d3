//! Hides the credentials in a database or Redis URL before it reaches a
//! message or a log.

/// `url` with its password, if any, replaced by `***`:
/// `postgres://app:secret@db/demo` becomes `postgres://app:***@db/demo`.
///
/// A user name alone (`scheme://name@host`) is kept in a database URL, where
/// it names a user, and hidden in any other, because Redis clients read
/// `redis://secret@host` as a password: it becomes `redis://:***@host`.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite:demo-app.db` has no credentials to hide; anything else that
        // is not a URL might hold some, in a form we cannot take apart.
        return if url.contains('@') {
            "<unparsable URL>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => user,
        None if names_a_user(scheme) => return url.to_owned(),
        None => "",
    };
    format!("{scheme}://{user}:***@{host}{path}")
}

/// Whether `scheme://name@host` names a user, as in the database URLs SQLx
/// reads, rather than giving a password.
fn names_a_user(scheme: &str) -> bool {
    matches!(scheme, "postgres" | "postgresql" | "mysql" | "mariadb")
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn database_passwords_are_hidden_and_user_names_kept() {
        assert_eq!(
            url("postgres://app:s3cret@db:5432/demo"),
            "postgres://app:***@db:5432/demo"
        );
        assert_eq!(
            url("mysql://root@127.0.0.1:3306/demo"),
            "mysql://root@127.0.0.1:3306/demo"
        );
        assert_eq!(url("sqlite://demo-app.db"), "sqlite://demo-app.db");
        assert_eq!(url("sqlite:demo-app.db"), "sqlite:demo-app.db");
        assert_eq!(url("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
    }

    #[test]
    fn redis_passwords_are_hidden_in_both_forms() {
        assert_eq!(url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            url("redis://app:s3cret@host:6379/2"),
            "redis://app:***@host:6379/2"
        );
        assert_eq!(url("rediss://:s3cret@host"), "rediss://:***@host");
        // A lone user-info is a password to Redis clients.
        assert_eq!(url("redis://s3cret@host:6379"), "redis://:***@host:6379");
        assert_eq!(url("s3cret@host:6379"), "<unparsable URL>");
    }
}
