use cache_runtime::redis_cached;

struct Repo {
    tenant: String,
}

impl Repo {
    #[redis_cached(key = "tenant:{self.tenant}:user:{id}")]
    async fn user_name(&self, id: i64) -> String {
        format!("{}/{id}", self.tenant)
    }
}

fn main() {
    let repo = Repo {
        tenant: "acme".into(),
    };
    drop(repo.user_name(1));
}
