// Error classes of @skytale/sdk. Every error carries a stable `code` (`SKYTALE_…`); its class is
// chosen by the code's category in lib/codes.js (never by the message).
'use strict'

const { CODES, CATEGORY_CLASS } = require('./codes.js')

/** Base class of every Skytale error. */
class SkytaleError extends Error {
  /**
   * @param {string} message
   * @param {string} [code] a stable `SKYTALE_…` code (default `SKYTALE_INTERNAL`)
   * @param {{ cause?: unknown }} [options]
   */
  constructor(message, code, options) {
    super(message, options)
    this.name = 'SkytaleError'
    /** @type {string} */
    this.code = code ?? 'SKYTALE_INTERNAL'
  }
}
/**
 * A subclass of SkytaleError named `name` (its `name` property too).
 * @param {string} name
 * @returns {typeof SkytaleError}
 */
function errorClass(name) {
  const cls = {
    [name]: class extends SkytaleError {
      /** @param {string} m @param {string} [c] @param {{ cause?: unknown }} [o] */
      constructor(m, c, o) { super(m, c, o); this.name = name }
    },
  }[name]
  return cls
}

/** API key, relay token, agent registration or credential refused; a channel of another org. */
const AuthError = errorClass('AuthError')
/** The agent's encrypted keystore: wrong key, corrupt, locked by another process, storage failure. */
const KeystoreError = errorClass('KeystoreError')
/** The API server or the relay could not be reached, refused for load, or timed out. */
const TransportError = errorClass('TransportError')
/** Channel-level problems: unknown or existing channel, membership, invites, epochs. */
const ChannelError = errorClass('ChannelError')
/** MLS-level problems: undecryptable, replayed or invalid messages, key packages. */
const MlsError = errorClass('MlsError')
/** An invalid argument or request: bad identity, channel name, relay address, options. */
const ValidationError = errorClass('ValidationError')
/** The object cannot do this any more: a closed agent or client. */
const StateError = errorClass('StateError')

const CLASSES = { SkytaleError, AuthError, KeystoreError, TransportError, ChannelError, MlsError, ValidationError, StateError }

/** napi-rs status codes that mean "wrong argument type" (thrown before Rust code runs). */
const NAPI_ARGUMENT_STATUS = new Set([
  'InvalidArg', 'ObjectExpected', 'StringExpected', 'NameExpected', 'FunctionExpected', 'NumberExpected',
  'BooleanExpected', 'ArrayExpected', 'BigintExpected', 'DateExpected', 'ArrayBufferExpected', 'DetachableArraybufferExpected',
])

/**
 * The error class of a code (SkytaleError for unknown codes).
 * @param {string} code
 * @returns {typeof SkytaleError}
 */
function errorClassFor(code) {
  const category = Object.prototype.hasOwnProperty.call(CODES, code) ? CODES[code] : 'internal'
  return CLASSES[/** @type {keyof typeof CLASSES} */ (CATEGORY_CLASS[category])]
}

/**
 * Wraps any error (from the native layer or elsewhere) into the SkytaleError subclass of its
 * code. SkytaleErrors pass through unchanged; napi argument-type errors become
 * `SKYTALE_INVALID_ARGUMENT`; anything else without a `SKYTALE_…` code becomes `SKYTALE_INTERNAL`.
 * The original error is kept as `cause`.
 * @param {unknown} err
 * @returns {SkytaleError}
 */
function toSkytaleError(err) {
  if (err instanceof SkytaleError) return err
  /** @type {any} */
  const e = err
  const raw = typeof e?.code === 'string' ? e.code : undefined
  const code = raw?.startsWith('SKYTALE_') ? raw : raw && NAPI_ARGUMENT_STATUS.has(raw) ? 'SKYTALE_INVALID_ARGUMENT' : 'SKYTALE_INTERNAL'
  const message = typeof e?.message === 'string' ? e.message : String(err)
  const Cls = errorClassFor(code)
  const out = new Cls(message, code, { cause: err })
  if (typeof e?.index === 'number') Object.defineProperty(out, 'index', { value: e.index, enumerable: true })
  if (e instanceof Error && typeof e.stack === 'string') out.stack = `${out.name}: ${message}\n${e.stack.split('\n').slice(1).join('\n')}`
  return out
}

/**
 * A new error of the class of `code`.
 * @param {string} code
 * @param {string} message
 * @param {{ cause?: unknown }} [options]
 * @returns {SkytaleError}
 */
function createError(code, message, options) {
  const Cls = errorClassFor(code)
  return new Cls(message, code, options)
}

module.exports = { ...CLASSES, toSkytaleError, errorClassFor, createError }
