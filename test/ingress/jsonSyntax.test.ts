/** The JSON error locator agrees with JSON.parse on what is valid, and names the first offending character. */
import { describe, expect, it } from "@effect/vitest"
import { locateJsonSyntaxError } from "../../src/ingress/JsonSyntax.js"

describe("locateJsonSyntaxError", () => {
  it("finds an error exactly when JSON.parse rejects (seeded random texts)", () => {
    const alphabet = [...'{}[],:"\\u019-+.eEtruefalsn x/b', "\n", "\u0001", "é", "\ufeff"]
    let seed = 42
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
      return seed / 2 ** 31
    }
    const disagreements: Array<string> = []
    for (let n = 0; n < 50_000; n++) {
      let text = ""
      const length = Math.floor(random() * 12)
      for (let k = 0; k < length; k++) text += alphabet[Math.floor(random() * alphabet.length)]
      let valid = true
      try {
        JSON.parse(text)
      } catch {
        valid = false
      }
      if (valid !== (locateJsonSyntaxError(text) === undefined)) disagreements.push(text)
    }
    expect(disagreements).toEqual([])
  })

  it("accepts valid documents of any shape and depth", () => {
    const value = { a: [1, -2.5e3, 'x"\\\n\u0001é', null, true, false, { b: {} }], deep: [[[[[[]]]]]] }
    expect(locateJsonSyntaxError(JSON.stringify(value))).toBeUndefined()
    expect(locateJsonSyntaxError(JSON.stringify(value, null, 2))).toBeUndefined()
    expect(locateJsonSyntaxError("[".repeat(100_000) + "]".repeat(100_000))).toBeUndefined()
  })

  it("names line, column and problem", () => {
    expect(locateJsonSyntaxError('{"a": 1,\n  "b": tru }')).toEqual({
      offset: 19,
      line: 2,
      column: 11,
      problem: "unexpected ' ', expected 'true'",
    })
    expect(locateJsonSyntaxError('{"a":1,}')?.problem).toBe(
      "unexpected '}', expected a property name in double quotes",
    )
    expect(locateJsonSyntaxError('"a\u0001"')?.problem).toBe(
      "unexpected control character U+0001 in a string: control characters must be escaped",
    )
    expect(locateJsonSyntaxError("\ufeff{}")?.problem).toBe(
      "unexpected byte order mark U+FEFF, expected a value",
    )
    expect(locateJsonSyntaxError("{} {}")?.problem).toBe(
      "unexpected '{', expected nothing after the JSON value",
    )
  })
})
