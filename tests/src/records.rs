//! Checks on the JSON records an agent started with `--print-requests`
//! printed (`Agent::printed_records`).

use serde_json::Value;

/// The records of the four-exchange mix the Go and nginx tests send: four
/// records, three answered (200) and one rate-limited (429), two of them
/// streamed. `what` starts every failure message.
pub fn check_mix_of_four(records: &[Value], what: &str) {
    assert_eq!(records.len(), 4, "{what}: {records:?}");
    let mut statuses: Vec<u64> = records.iter().filter_map(|x| x["status"].as_u64()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 429], "{what}: {records:?}");
    assert_eq!(records.iter().filter(|x| x["streaming"] == true).count(), 2, "{what}: {records:?}");
}

/// The sum of the records' `tokens.KIND` (`input`, `output`, ...), records without it left out.
pub fn token_total(records: &[Value], kind: &str) -> u64 {
    records.iter().filter_map(|x| x["tokens"][kind].as_u64()).sum()
}
