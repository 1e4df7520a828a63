// Error classes of @skytale/sdk. Every error carries a stable `code` (`SKYTALE_…`).
'use strict'

/** Base class of every Skytale error. */
class SkytaleError extends Error {
  constructor(message, code, options) {
    super(message, options)
    this.name = 'SkytaleError'
    this.code = code
  }
}
/** The API key, token or keystore key was refused, or a channel of another org was touched. */
class AuthError extends SkytaleError { constructor(m, c, o) { super(m, c, o); this.name = 'AuthError' } }
/** The API server or the relay could not be reached, or the client is closed. */
class TransportError extends SkytaleError { constructor(m, c, o) { super(m, c, o); this.name = 'TransportError' } }
/** Channel-level problems: unknown channel, bad name, invites, membership. */
class ChannelError extends SkytaleError { constructor(m, c, o) { super(m, c, o); this.name = 'ChannelError' } }
/** MLS-level problems: undecryptable, replayed or out-of-epoch messages, key packages. */
class MlsError extends SkytaleError { constructor(m, c, o) { super(m, c, o); this.name = 'MlsError' } }

const AUTH = /^SKYTALE_(AUTH_|FORBIDDEN_CHANNEL|KEYSTORE_WRONG_KEY|IDENTITY_MISMATCH|API_ERROR)/
const TRANSPORT = /^SKYTALE_(TRANSPORT|CONNECTION_CLOSED|TIMEOUT|API_UNREACHABLE|NO_RELAY|CLIENT_CLOSED|RATE_LIMITED|INVALID_ADDRESS|SHUTTING_DOWN|IDLE_TIMEOUT|SLOW_CONSUMER|TOO_MANY_CONNECTIONS|UNEXPECTED_REPLY|MALFORMED_FRAME|FRAME_TOO_LARGE)/
const CHANNEL = /^SKYTALE_(CHANNEL_|INVALID_CHANNEL_NAME|INVITE_|JOIN_TIMEOUT|NOT_A_MEMBER|MEMBER_NOT_FOUND|INVALID_IDENTITY|RECIPIENT_QUEUE_FULL)/
const MLS = /^SKYTALE_(DECRYPT_FAILED|REPLAY|WRONG_EPOCH|INVALID_MESSAGE|KEY_PACKAGE_|COMMIT_CONTENTION|INVALID_STATE)/

/** Wraps any error from the native layer into the matching SkytaleError subclass. */
function toSkytaleError(err) {
  if (err instanceof SkytaleError) return err
  const code = typeof err?.code === 'string' && err.code.startsWith('SKYTALE_') ? err.code : 'SKYTALE_INTERNAL'
  const message = err?.message ?? String(err)
  const Cls = AUTH.test(code) ? AuthError : TRANSPORT.test(code) ? TransportError : CHANNEL.test(code) ? ChannelError : MLS.test(code) ? MlsError : SkytaleError
  return new Cls(message, code, { cause: err })
}

module.exports = { SkytaleError, AuthError, TransportError, ChannelError, MlsError, toSkytaleError }
