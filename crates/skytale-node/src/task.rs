//! A libuv thread-pool task running one core operation, rejecting with coded errors.

use napi::bindgen_prelude::*;
use napi::{Env, Task};
use skytale_core::{BatchError, Error as CoreError};
use std::result::Result;

use crate::errors::{js_error, js_error_at};

type Work<T> = Box<dyn FnOnce() -> Result<T, BatchError> + Send>;
type Convert<T, J> = fn(&Env, T) -> napi::Result<J>;

/// One core call: `work` runs off the main thread, `convert` builds the JS value.
pub struct CoreTask<T: Send + 'static, J> {
    work: Option<Work<T>>,
    convert: Convert<T, J>,
    failure: Option<BatchError>,
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
        AsyncTask::new(CoreTask {
            work: Some(Box::new(move || work().map_err(BatchError::from))),
            convert,
            failure: None,
        })
    }

    /// [`CoreTask::spawn`] for a batch call: an error naming the failing item rejects with
    /// an `Error` whose `index` is that item's.
    pub fn spawn_batch(
        work: impl FnOnce() -> Result<T, BatchError> + Send + 'static,
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
            Some(BatchError { item: None, error }) => Err(js_error(&env, &error)),
            Some(BatchError { item: Some(index), error }) => Err(js_error_at(&env, &error, index)),
            None => Err(err),
        }
    }
}

/// Identity conversion for outputs that are already JS values.
pub fn same<T>(_: &Env, v: T) -> napi::Result<T> {
    Ok(v)
}
