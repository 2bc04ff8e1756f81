//! The config file parser and its checks (`Config::check_offline`: what `switchyard
//! check` runs, without resolving names or reading files) on arbitrary text: never
//! panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchyard::config::Config::check_offline(text);
    }
});
