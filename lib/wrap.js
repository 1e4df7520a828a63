// Routes every error of the native classes (Agent, Channel, Client, ClientChannel) through
// toSkytaleError: each method, static method and getter of their prototypes is replaced, once,
// by a wrapper that maps synchronous throws and promise rejections to the SkytaleError subclass
// of the error's code. Objects the native layer returns are instances of the same classes, so
// they are covered too (a JS subclass would not be).
'use strict'

const { toSkytaleError } = require('./errors.js')

const WRAPPED = Symbol.for('skytale.wrapped')

/**
 * @param {Function} fn
 * @returns {Function}
 */
function wrapFunction(fn) {
  /** @this {unknown} @param {...unknown} args */
  const wrapped = function (...args) {
    let out
    try {
      out = fn.apply(this, args)
    } catch (err) {
      throw toSkytaleError(err)
    }
    if (out && typeof (/** @type {any} */ (out).then) === 'function') {
      return /** @type {Promise<unknown>} */ (out).then(undefined, (err) => { throw toSkytaleError(err) })
    }
    return out
  }
  Object.defineProperty(wrapped, 'name', { value: fn.name })
  Object.defineProperty(wrapped, 'length', { value: fn.length })
  return wrapped
}

/**
 * @param {object} target a prototype or a constructor (for static methods)
 * @param {string[]} skip property names left alone
 */
function wrapMembers(target, skip) {
  for (const key of Object.getOwnPropertyNames(target)) {
    if (skip.includes(key)) continue
    const desc = Object.getOwnPropertyDescriptor(target, key)
    if (!desc || !desc.configurable) continue
    if (typeof desc.value === 'function') {
      Object.defineProperty(target, key, { ...desc, value: wrapFunction(desc.value) })
    } else if (desc.get) {
      Object.defineProperty(target, key, { ...desc, get: /** @type {() => any} */ (wrapFunction(desc.get)), set: desc.set && /** @type {(v: any) => void} */ (wrapFunction(desc.set)) })
    }
  }
}

/**
 * Wraps the given native classes in place (idempotent).
 * @param {Function[]} classes
 */
function wrapNativeClasses(classes) {
  for (const cls of classes) {
    const c = /** @type {any} */ (cls)
    if (c[WRAPPED]) continue
    wrapMembers(cls.prototype, ['constructor', 'messages'])
    wrapMembers(cls, ['prototype', 'length', 'name'])
    Object.defineProperty(c, WRAPPED, { value: true })
  }
}

/**
 * A constructor that stands for a native class whose static methods cannot be replaced (napi
 * defines them non-writable and non-configurable): it shares the native prototype, so
 * `instanceof` holds for every instance the native layer returns, inherits the other statics,
 * and has its own wrapped copies of the given static methods.
 * @template {Function} T
 * @param {T} nativeClass
 * @param {Record<string, Function>} statics replacement static methods (wrapped here)
 * @returns {T}
 */
function facade(nativeClass, statics) {
  /** @this {unknown} @param {...unknown} args */
  function Facade(...args) {
    return Reflect.construct(nativeClass, args, new.target ?? nativeClass)
  }
  Object.defineProperty(Facade, 'name', { value: nativeClass.name })
  Object.defineProperty(Facade, 'prototype', { value: nativeClass.prototype, writable: false })
  Object.setPrototypeOf(Facade, nativeClass)
  for (const [key, fn] of Object.entries(statics)) {
    Object.defineProperty(Facade, key, { value: wrapFunction(fn), writable: true, configurable: true, enumerable: false })
  }
  return /** @type {any} */ (Facade)
}

module.exports = { wrapNativeClasses, wrapFunction, facade }
