// @skytale/sdk ESM entry: the same objects as the CommonJS entry (lib/index.js), with every
// public name listed explicitly so that `import { Agent } from '@skytale/sdk'` works in Node ESM.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const sdk = require('./index.js')

export const {
  Agent,
  Channel,
  Client,
  ClientChannel,
  SkytaleChannelManager,
  SkytaleError,
  AuthError,
  KeystoreError,
  TransportError,
  ChannelError,
  MlsError,
  ValidationError,
  StateError,
  toSkytaleError,
  errorClassFor,
  ERROR_CODES,
} = sdk
