//! placeholder
pub fn run(_clients: usize, _seconds: u64) -> anyhow::Result<()> {
    Ok(())
}
