//! A libuv thread-pool task running one core operation, rejecting with coded errors.

use napi::bindgen_prelude::*;
use napi::{Env, Task};
use skytale_core::Error as CoreError;
use std::result::Result;

use crate::errors::js_error;

type Work<T> = Box<dyn FnOnce() -> Result<T, CoreError> + Send>;
type Convert<T, J> = fn(&Env, T) -> napi::Result<J>;

/// One core call: `work` runs off the main thread, `convert` builds the JS value.
pub struct CoreTask<T: Send + 'static, J> {
    work: Option<Work<T>>,
    convert: Convert<T, J>,
    failure: Option<CoreError>,
}

impl<T: Send + 'static, J> CoreTask<T, J> {
    /// Wraps `work` and `convert` into an `AsyncTask` (a `Promise` in JS).
    pub fn spawn(
        work: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
        convert: Convert<T, J>,
    ) -> AsyncTask<CoreTask<T, J>>
    where
        J: ToNapiValue + TypeName,
    {
        AsyncTask::new(CoreTask { work: Some(Box::new(work)), convert, failure: None })
    }
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Task for CoreTask<T, J> {
    type Output = T;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<T> {
        let work = self.work.take().ok_or_else(|| napi::Error::from_reason("task ran twice"))?;
        work().map_err(|e| {
            self.failure = Some(e);
            napi::Error::from_reason("skytale operation failed")
        })
    }

    fn resolve(&mut self, env: Env, output: T) -> napi::Result<J> {
        (self.convert)(&env, output)
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<J> {
        match self.failure.take() {
            Some(e) => Err(js_error(&env, &e)),
            None => Err(err),
        }
    }
}

/// Identity conversion for outputs that are already JS values.
pub fn same<T>(_: &Env, v: T) -> napi::Result<T> {
    Ok(v)
}
