//! Turns core errors into JavaScript `Error`s carrying the stable `code`.

use napi::bindgen_prelude::*;
use skytale_core::Error as CoreError;

/// Error code wrapper used as the `status` of a napi error, which napi exposes as `err.code`.
#[derive(Debug, Clone)]
pub struct Code(pub String);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The error type of synchronous binding functions.
pub type SyncError = napi::Error<Code>;

/// Converts a core error for a synchronous call.
pub fn sync_error(e: CoreError) -> SyncError {
    napi::Error::new(Code(e.code().to_string()), e.to_string())
}

/// Error for calls on an agent after `close()`.
pub fn closed() -> CoreError {
    CoreError::InvalidState("the agent is closed".into())
}

/// Builds a JS `Error` with `code` set, as a napi error that rethrows that object.
pub fn js_error(env: &Env, e: &CoreError) -> napi::Error {
    js_error_code(env, e.code(), &e.to_string())
}

/// Builds a JS `Error` with `code` set and `index`: the batch item that failed.
pub fn js_error_at(env: &Env, e: &CoreError, index: usize) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let mut obj = env.create_error(napi::Error::from_reason(format!("item {index}: {e}")))?;
        obj.set_named_property("code", e.code())?;
        obj.set_named_property("index", index as u32)?;
        Ok(napi::Error::from(obj.to_unknown()))
    };
    build().unwrap_or_else(|err| err)
}

/// Builds a JS `Error` with the given `code` and message, and `index`: the item that failed.
pub fn js_error_code_at(env: &Env, code: &str, message: &str, index: usize) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let mut obj = env.create_error(napi::Error::from_reason(format!("item {index}: {message}")))?;
        obj.set_named_property("code", code)?;
        obj.set_named_property("index", index as u32)?;
        Ok(napi::Error::from(obj.to_unknown()))
    };
    build().unwrap_or_else(|err| err)
}

/// Builds a JS `Error` with the given `code` and message.
pub fn js_error_code(env: &Env, code: &str, message: &str) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let mut obj = env.create_error(napi::Error::from_reason(message.to_string()))?;
        obj.set_named_property("code", code)?;
        Ok(napi::Error::from(obj.to_unknown()))
    };
    build().unwrap_or_else(|err| err)
}
