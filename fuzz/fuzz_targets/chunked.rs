//! `chunked::Decoder` over arbitrary bytes: never panics; fed in pieces (sizes drawn
//! from the first byte), it finds the same data, the same end and the same error as
//! fed all at once; and each step's data range lies inside what it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::http1::chunked::{ChunkError, Decoder, Step};

/// How decoding ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body ended after this many bytes of input.
    Done(usize),
    /// The input ran out first.
    NeedMore,
    Err(ChunkError),
}

/// Decodes `input` arriving in pieces of the given sizes (cycled): the data, and how
/// it ended.
fn decode(input: &[u8], sizes: &[usize]) -> (Vec<u8>, End) {
    let mut d = Decoder::new(512);
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut used_total = 0;
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at == input.len() {
            return (data, End::NeedMore);
        }
        let n = size.clamp(1, input.len() - at);
        pending.extend_from_slice(&input[at..at + n]);
        at += n;
        loop {
            let (used, step) = match d.decode(&pending) {
                Ok(r) => r,
                Err(e) => return (data, End::Err(e)),
            };
            assert!(used <= pending.len());
            if let Step::Data(r) = &step {
                assert!(!r.is_empty() && r.end <= used, "{r:?} of {used}");
                data.extend_from_slice(&pending[r.clone()]);
            }
            pending.drain(..used);
            used_total += used;
            match step {
                Step::Done => {
                    assert!(d.is_done());
                    return (data, End::Done(used_total));
                }
                Step::NeedMore => {
                    assert!(pending.is_empty(), "NeedMore with bytes unused");
                    break;
                }
                Step::Data(_) => {}
            }
        }
    }
    unreachable!()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, &[usize::MAX]);
    // Piece sizes 1..=8 and one of up to 64, in an order set by `pick`.
    let sizes = [
        usize::from(pick & 7) + 1,
        usize::from(pick >> 3 & 3) + 1,
        usize::from(pick >> 2) + 1,
        1,
    ];
    let pieces = decode(input, &sizes);
    assert_eq!(whole, pieces, "pieces of {sizes:?}");
    let bytewise = decode(input, &[1]);
    assert_eq!(whole, bytewise, "one byte at a time");
});
