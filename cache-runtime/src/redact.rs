//! Keeping secrets out of what is shown: a Redis URL's password, found and
//! redacted, so that no log line, error or `Debug` output carries it.

/// The password in `url`, if it has one (`redis://user:PASSWORD@…`).
pub(crate) fn url_password(url: &str) -> Option<&str> {
    let authority_start = url.find("://")? + 3;
    let rest = &url[authority_start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let password = match userinfo.find(':') {
        Some(colon) => &userinfo[colon + 1..],
        None => userinfo,
    };
    (!password.is_empty()).then_some(password)
}

/// `url` with the password, if any, replaced by `***`: the only form in which
/// a URL is ever logged, displayed or debug-printed.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL we can take apart: show nothing that could be a secret.
        return "<unparsable URL>".to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        // `redis://secret@host` is read as a password by some clients.
        None => "",
    };
    format!(
        "{}{user}:***@{}",
        &url[..authority_start],
        &url[authority_start + at + 1..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis://app:s3cret@host:6379/2"),
            "redis://app:***@host:6379/2"
        );
        assert_eq!(redact_url("rediss://:s3cret@host"), "rediss://:***@host");
        assert_eq!(redact_url("redis://s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://u:p@ss@host"), "redis://u:***@host");
        assert_eq!(redact_url("s3cret"), "<unparsable URL>");
        assert_eq!(url_password("redis://app:s3cret@host/1"), Some("s3cret"));
        assert_eq!(url_password("redis://s3cret@host"), Some("s3cret"));
        assert_eq!(url_password("redis://host:6379"), None);
    }
}
