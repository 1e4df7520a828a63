// Every stable error code of Skytale (`SKYTALE_…`), with the category that picks its JS error
// class. One table for the Rust crates (skytale-proto ErrorCode, skytale-core, skytale-client),
// the relay, the API server and the JS layer. `npm test` (tools/gen-codes.mjs --check) fails when
// a `"SKYTALE_…"` code string in crates/, relay/ or api-server/src is missing here, and when the
// `SkytaleErrorCode` union in lib/index.d.ts is not generated from this table.
'use strict'

/**
 * Categories → error class names (lib/errors.js):
 * auth → AuthError, keystore → KeystoreError, transport → TransportError,
 * channel → ChannelError, mls → MlsError, validation → ValidationError, state → StateError,
 * internal → SkytaleError (the base class).
 * @typedef {'auth' | 'keystore' | 'transport' | 'channel' | 'mls' | 'validation' | 'state' | 'internal'} Category
 */

/** @type {Readonly<Record<string, Category>>} */
const CODES = Object.freeze({
  // --- auth: API keys, relay tokens, agent registration and credentials, org boundaries
  SKYTALE_AUTH_REQUIRED: 'auth', // relay: a request before Auth
  SKYTALE_AUTH_INVALID: 'auth', // relay: bad token (signature, key, aud/iss, identity)
  SKYTALE_AUTH_EXPIRED: 'auth', // relay: the token expired
  SKYTALE_AUTH_TIMEOUT: 'auth', // relay: no Auth frame in time
  SKYTALE_AUTH_KEY_INVALID: 'auth', // API server: unknown API key
  SKYTALE_AUTH_KEY_REVOKED: 'auth', // API server: revoked API key
  SKYTALE_AUTH_RATE_LIMITED: 'auth', // client: the API server rate-limited the token request
  SKYTALE_AUTH_IDENTITY_FORBIDDEN: 'auth', // API server: the key may not act for this identity
  SKYTALE_FORBIDDEN: 'auth', // API server: the key's role does not allow the call
  SKYTALE_FORBIDDEN_CHANNEL: 'auth', // relay: a channel of another org
  SKYTALE_SCOPE_FORBIDDEN: 'auth', // a token or key scope does not cover the call
  SKYTALE_AGENT_KEY_MISMATCH: 'auth', // API server: the agent is registered with another key
  SKYTALE_AGENT_REVOKED: 'auth', // API server: the agent was revoked
  SKYTALE_AGENT_NOT_REGISTERED: 'auth', // API server: the agent has no credential yet
  SKYTALE_CREDENTIAL_INVALID: 'auth', // a member's agent credential does not verify

  // --- keystore: the agent's encrypted local store
  SKYTALE_KEYSTORE_WRONG_KEY: 'keystore',
  SKYTALE_KEYSTORE_CORRUPT: 'keystore',
  SKYTALE_KEYSTORE_LOCKED: 'keystore', // open in another process
  SKYTALE_IDENTITY_MISMATCH: 'keystore', // the keystore belongs to another identity
  SKYTALE_STORAGE: 'keystore', // a storage (SQLite) failure

  // --- transport: reaching the API server and the relay, relay limits, timeouts
  SKYTALE_TRANSPORT: 'transport',
  SKYTALE_CONNECTION_CLOSED: 'transport',
  SKYTALE_TIMEOUT: 'transport',
  SKYTALE_API_UNREACHABLE: 'transport',
  SKYTALE_API_ERROR: 'transport', // the API server answered something unexpected
  SKYTALE_NO_RELAY: 'transport', // no relay address configured or published
  SKYTALE_UNEXPECTED_REPLY: 'transport',
  SKYTALE_MALFORMED_FRAME: 'transport',
  SKYTALE_FRAME_TOO_LARGE: 'transport',
  SKYTALE_UNSUPPORTED_VERSION: 'transport',
  SKYTALE_RATE_LIMITED: 'transport',
  SKYTALE_QUOTA_EXCEEDED: 'transport',
  SKYTALE_TOO_MANY_CONNECTIONS: 'transport',
  SKYTALE_IDLE_TIMEOUT: 'transport',
  SKYTALE_SLOW_CONSUMER: 'transport',
  SKYTALE_SHUTTING_DOWN: 'transport',
  SKYTALE_RECIPIENT_QUEUE_FULL: 'transport', // relay: a Welcome recipient's queue is full
  SKYTALE_DEV_STACK: 'transport', // JS: the local dev stack (skytale dev) failed to start

  // --- channel: channels, members, invites, epochs
  SKYTALE_CHANNEL_NOT_FOUND: 'channel',
  SKYTALE_CHANNEL_EXISTS: 'channel',
  SKYTALE_NOT_A_MEMBER: 'channel',
  SKYTALE_MEMBER_NOT_FOUND: 'channel',
  SKYTALE_INVITE_INVALID: 'channel',
  SKYTALE_INVITE_EXPIRED: 'channel',
  SKYTALE_INVITE_USED_UP: 'channel',
  SKYTALE_INVITE_WRONG_CHANNEL: 'channel',
  SKYTALE_JOIN_TIMEOUT: 'channel',
  SKYTALE_WRONG_EPOCH: 'channel',
  SKYTALE_COMMIT_CONTENTION: 'channel', // lost the race for an epoch too many times
  SKYTALE_FORK_DETECTED: 'channel', // members disagree about the epoch

  // --- mls: messages and key packages
  SKYTALE_DECRYPT_FAILED: 'mls',
  SKYTALE_REPLAY: 'mls',
  SKYTALE_INVALID_MESSAGE: 'mls',
  SKYTALE_KEY_PACKAGE_USED: 'mls',
  SKYTALE_KEY_PACKAGE_NOT_FOUND: 'mls',
  SKYTALE_KEY_PACKAGE_LIMIT: 'mls',

  // --- validation: the caller passed something invalid
  SKYTALE_INVALID_ARGUMENT: 'validation',
  SKYTALE_INVALID_IDENTITY: 'validation',
  SKYTALE_INVALID_CHANNEL_NAME: 'validation',
  SKYTALE_INVALID_REQUEST: 'validation',
  SKYTALE_INVALID_ADDRESS: 'validation', // a malformed relay address
  SKYTALE_NOT_FOUND: 'validation', // API server: the resource does not exist
  SKYTALE_CONFLICT: 'validation', // API server: it already exists

  // --- state: the object cannot do this (any more)
  SKYTALE_INVALID_STATE: 'state', // e.g. a closed agent
  SKYTALE_CLIENT_CLOSED: 'state',

  // --- internal: bugs and the unexpected (the base class SkytaleError)
  SKYTALE_INTERNAL: 'internal',
  SKYTALE_ABORTED: 'internal', // CLI: the command was interrupted
})

/** Category → the name of its error class in lib/errors.js. */
const CATEGORY_CLASS = Object.freeze({
  auth: 'AuthError',
  keystore: 'KeystoreError',
  transport: 'TransportError',
  channel: 'ChannelError',
  mls: 'MlsError',
  validation: 'ValidationError',
  state: 'StateError',
  internal: 'SkytaleError',
})

module.exports = { CODES, CATEGORY_CLASS }
