//! The configuration loader, YAML and TOML: an error or a configuration, never a panic; a
//! configuration it accepts validates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towerscope::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for loaded in [Config::from_yaml_str(text), Config::from_toml_str(text)] {
        if let Ok(config) = loaded {
            // What loads is valid (the loaders validate); its prefix is a name prefix.
            let prefix = config.metric.prefix();
            assert!(prefix.is_empty() || prefix.ends_with('_'));
        }
    }
});
