//! The HPACK decoder the HTTP/2 parser uses (`loona-hpack`), as configured
//! there: arbitrary header blocks, one after the other on one dynamic table
//! with a bounded size, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loona_hpack::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new();
    decoder.set_max_allowed_table_size(4096);
    // Blocks are separated by 0xfe bytes.
    for block in data.split(|&b| b == 0xfe) {
        let mut fields = 0usize;
        if decoder.decode_with_cb(block, |name, value| fields += name.len() + value.len()).is_err() {
            break;
        }
    }
});
