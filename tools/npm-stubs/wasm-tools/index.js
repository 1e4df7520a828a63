throw new Error('@napi-rs/wasm-tools is stubbed in this repository (see tools/npm-stubs); use --cross-compile instead')
