//! The config file parser and its checks (`Config::check_offline`: what `switchyard
//! check` runs, without resolving names or reading files) on arbitrary text: never
//! panics. And the nesting pre-scan (`config::input::check`, run first by the parser,
//! limit 64) never lets through text that libyaml finds nested past serde_yaml_ng's
//! recursion limit (128): the pre-scan counts levels as libyaml's parser opens them, so
//! if it can be fooled (a bracket it takes for part of a string, say), this finds out.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = switchyard::config::Config::check_offline(text);
    // Aliases repeat a node inside others and tags may add a level: both can go
    // deeper than the text does, so such text is left out of the comparison.
    if switchyard::config::input::check(text).is_ok() && !text.contains(['*', '!']) {
        if let Err(e) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            assert!(
                !e.to_string().starts_with("recursion limit exceeded"),
                "the pre-scan passed text that libyaml finds too deep: {text:?}"
            );
        }
    }
});
