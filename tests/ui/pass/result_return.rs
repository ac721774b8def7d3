use std::num::ParseIntError;

use cache_runtime::redis_cached;

#[derive(Debug)]
enum Error {
    Parse(ParseIntError),
    Negative,
}

impl From<ParseIntError> for Error {
    fn from(error: ParseIntError) -> Self {
        Error::Parse(error)
    }
}

// Only `Ok` is stored; `?` converts through `From`, and `return` leaves early,
// as in the original function.
#[redis_cached(key = "parsed:{text}")]
async fn parse_positive(text: &str) -> Result<u32, Error> {
    let value: i64 = text.trim().parse()?;
    if value < 0 {
        return Err(Error::Negative);
    }
    Ok(value as u32)
}

fn main() {
    drop(parse_positive("12"));
}
