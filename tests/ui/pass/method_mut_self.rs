use cache_runtime::redis_cached;

struct Counter {
    name: String,
    computed: u32,
}

impl Counter {
    #[redis_cached(key = "counter:{self.name}:{step}")]
    async fn advance(&mut self, step: u32) -> u32 {
        self.computed += step;
        self.computed
    }
}

fn main() {
    let mut counter = Counter {
        name: "c".into(),
        computed: 0,
    };
    drop(counter.advance(2));
}
