//! A config file: TOML parse, unknown-key checks, deserialisation and cross-field validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml_str(text) {
        // An accepted config dumps to TOML that loads back.
        let dumped = config.to_toml();
        Config::from_toml_str(&dumped).expect("a dumped config loads again");
    }
});
