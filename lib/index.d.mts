// Types of the ESM entry (lib/index.mjs): the same names as lib/index.d.ts.
export * from './index.js'
