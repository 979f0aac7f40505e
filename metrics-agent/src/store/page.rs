//! Pages of the list queries (`/api/v1/metrics`, `/api/v1/requests`,
//! `/api/v1/fscores` and their CLI forms): a row cap per answer and an
//! opaque `next` token that continues after the last row returned, so no
//! answer — and no memory the agent holds for one — grows with the data.

use serde::{Serialize, de::DeserializeOwned};

/// Rows per page at most; a larger `limit` is lowered to it.
pub const MAX_PAGE_ROWS: usize = 10_000;

/// Longest token accepted (a token holds a row's key: a time and a few names).
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The page size asked for: `default` when unset, at most `MAX_PAGE_ROWS`.
pub fn limit(asked: Option<i64>, default: usize) -> Result<usize, String> {
    match asked {
        None => Ok(default.min(MAX_PAGE_ROWS)),
        Some(n) if n < 1 => Err(format!("limit {n}: use 1 to {MAX_PAGE_ROWS}")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(MAX_PAGE_ROWS)),
    }
}

/// The token of a position (hex of its compact JSON: URL- and shell-safe).
pub fn encode(position: &impl Serialize) -> String {
    let json = serde_json::to_vec(position).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

/// The position a token holds; a one-line error for anything else.
pub fn decode<T: DeserializeOwned>(token: &str) -> Result<T, String> {
    let bad = || format!("cursor `{}`: pass the `next` value of the previous page unchanged", shorten(token));
    if token.len() > 2 * MAX_TOKEN_BYTES || !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
    serde_json::from_slice(&bytes.ok_or_else(bad)?).map_err(|_| bad())
}

fn shorten(token: &str) -> String {
    token.chars().filter(|c| !c.is_control()).take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_one_line_errors() {
        let position = (1_700_000_000i64, "app \u{e9}".to_string(), Some("m".to_string()));
        let token = encode(&position);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode::<(i64, String, Option<String>)>(&token), Ok(position));
        for bad in ["", "zz", "abc", "7b7d", &"a".repeat(20_000)] {
            let e = decode::<(i64, String, Option<String>)>(bad).unwrap_err();
            assert!(e.starts_with("cursor `") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn limits_are_capped() {
        assert_eq!(limit(None, 1_000), Ok(1_000));
        assert_eq!(limit(Some(5), 1_000), Ok(5));
        assert_eq!(limit(Some(i64::MAX), 1_000), Ok(MAX_PAGE_ROWS));
        assert!(limit(Some(0), 1_000).unwrap_err().contains("use 1 to"));
    }
}
