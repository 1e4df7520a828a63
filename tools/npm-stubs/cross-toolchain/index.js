throw new Error('@napi-rs/cross-toolchain is stubbed in this repository (see tools/npm-stubs); use --cross-compile instead')
