use cache_runtime::cache_evict;

#[cache_evict(key = "user:{id}", key = "team:{team_id}")]
async fn move_user(id: u64, team: u64) -> Result<(), String> {
    let _ = (id, team);
    Ok(())
}

fn main() {
    drop(move_user(1, 2));
}
