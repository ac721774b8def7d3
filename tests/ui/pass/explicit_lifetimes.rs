use cache_runtime::redis_cached;

#[redis_cached(key = "greeting:{first}:{last}")]
async fn greeting<'a, 'b>(first: &'a str, last: &'b str) -> String {
    format!("Hello, {first} {last}")
}

fn main() {
    let first = String::from("Ada");
    drop(greeting(&first, "Lovelace"));
}
