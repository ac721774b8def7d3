use std::fmt::Display;

use cache_runtime::redis_cached;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[redis_cached(key = "parse:{input}")]
async fn parse<'a, S, T>(input: &'a S) -> Option<T>
where
    S: Display + ?Sized,
    T: Serialize + DeserializeOwned + std::str::FromStr,
{
    input.to_string().parse().ok()
}

fn main() {
    drop(parse::<str, u32>("12"));
}
