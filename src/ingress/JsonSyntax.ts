/**
 * Where a JSON text goes wrong, for the 400 a device gets. V8's `JSON.parse` messages give a
 * position only for some errors ("Unexpected token '}', ... is not valid JSON" has none) and echo
 * the input back; this walks the text by RFC 8259's grammar and names the first offending
 * character with its line and column. Runs only after `JSON.parse` failed, so it is the cold path.
 */

/** The first syntax error of a JSON text. */
export interface JsonSyntaxError {
  /** Offset of the offending character in the decoded text (UTF-16 code units), 0-based. */
  readonly offset: number
  /** 1-based line and column of the offending character. */
  readonly line: number
  readonly column: number
  /** What is wrong there, e.g. `unexpected '}', expected a value`. */
  readonly problem: string
}

const ARRAY = 0
const OBJECT = 1

const isWhitespace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d
const isDigit = (c: number) => c >= 0x30 && c <= 0x39
const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)

class Failed {
  constructor(
    readonly offset: number,
    readonly problem: string,
  ) {}
}

/** The first syntax error in `text`, or undefined if it is valid JSON. */
export const locateJsonSyntaxError = (text: string): JsonSyntaxError | undefined => {
  let i = 0
  const at = (offset: number) => {
    if (offset >= text.length) return "end of input"
    const c = text.charCodeAt(offset)
    if (c === 0xfeff) return "byte order mark U+FEFF"
    if (c < 0x20) return `control character U+${c.toString(16).padStart(4, "0").toUpperCase()}`
    return `'${String.fromCodePoint(text.codePointAt(offset)!)}'`
  }
  const fail = (expected: string) => new Failed(i, `unexpected ${at(i)}, expected ${expected}`)
  const skipWhitespace = () => {
    while (i < text.length && isWhitespace(text.charCodeAt(i))) i++
  }
  const digits = (): Failed | undefined => {
    if (!isDigit(text.charCodeAt(i))) return fail("a digit")
    while (isDigit(text.charCodeAt(i))) i++
    return undefined
  }
  const string = (): Failed | undefined => {
    i++ // the opening quote
    for (;;) {
      if (i >= text.length) return new Failed(i, "unterminated string")
      const c = text.charCodeAt(i)
      if (c === 0x22) {
        i++
        return undefined
      }
      if (c < 0x20)
        return new Failed(i, `unexpected ${at(i)} in a string: control characters must be escaped`)
      if (c === 0x5c) {
        const escaped = text.charCodeAt(i + 1)
        if (escaped === 0x75) {
          for (let h = 2; h < 6; h++) {
            if (!isHex(text.charCodeAt(i + h))) {
              i += h
              return fail("a hex digit of a \\u escape")
            }
          }
          i += 6
        } else if (i + 1 < text.length && '"\\/bfnrt'.includes(text.charAt(i + 1))) {
          i += 2
        } else {
          i++
          return fail('an escape character (one of " \\ / b f n r t u)')
        }
      } else {
        i++
      }
    }
  }
  /** A member's `"name":`, leaving `i` at its value. */
  const memberName = (expected: string): Failed | undefined => {
    if (text.charCodeAt(i) !== 0x22) return fail(expected)
    const bad = string()
    if (bad) return bad
    skipWhitespace()
    if (text.charCodeAt(i) !== 0x3a) return fail("':' after the property name")
    i++
    skipWhitespace()
    return undefined
  }
  const number = (): Failed | undefined => {
    if (text.charCodeAt(i) === 0x2d) i++
    if (text.charCodeAt(i) === 0x30) i++
    else {
      const bad = digits()
      if (bad) return bad
    }
    if (text.charCodeAt(i) === 0x2e) {
      i++
      const bad = digits()
      if (bad) return bad
    }
    const e = text.charCodeAt(i)
    if (e === 0x65 || e === 0x45) {
      i++
      const sign = text.charCodeAt(i)
      if (sign === 0x2b || sign === 0x2d) i++
      const bad = digits()
      if (bad) return bad
    }
    return undefined
  }
  const literal = (word: string): Failed | undefined => {
    for (let k = 0; k < word.length; k++, i++) {
      if (text.charCodeAt(i) !== word.charCodeAt(k)) return fail(`'${word}'`)
    }
    return undefined
  }

  const stack: Array<number> = []
  const walk = (): Failed | undefined => {
    skipWhitespace()
    for (;;) {
      // A value.
      const c = text.charCodeAt(i)
      let bad: Failed | undefined
      if (c === 0x7b) {
        i++
        skipWhitespace()
        if (text.charCodeAt(i) === 0x7d) {
          i++
        } else {
          stack.push(OBJECT)
          bad = memberName("a property name in double quotes or '}'")
          if (bad) return bad
          continue
        }
      } else if (c === 0x5b) {
        i++
        skipWhitespace()
        if (text.charCodeAt(i) === 0x5d) {
          i++
        } else {
          stack.push(ARRAY)
          continue
        }
      } else if (c === 0x22) bad = string()
      else if (c === 0x2d || isDigit(c)) bad = number()
      else if (c === 0x74) bad = literal("true")
      else if (c === 0x66) bad = literal("false")
      else if (c === 0x6e) bad = literal("null")
      else return fail("a value")
      if (bad) return bad

      // After a value: close containers, or move to the next element or member.
      for (;;) {
        skipWhitespace()
        const top = stack.at(-1)
        if (top === undefined) return i < text.length ? fail("nothing after the JSON value") : undefined
        const next = text.charCodeAt(i)
        if (next === 0x2c) {
          i++
          skipWhitespace()
          if (top === OBJECT) {
            bad = memberName("a property name in double quotes")
            if (bad) return bad
          }
          break
        }
        if ((top === ARRAY && next === 0x5d) || (top === OBJECT && next === 0x7d)) {
          stack.pop()
          i++
          continue
        }
        return fail(top === ARRAY ? "',' or ']'" : "',' or '}'")
      }
    }
  }

  const failed = walk()
  if (failed === undefined) return undefined
  let line = 1
  let lineStart = 0
  for (let k = 0; k < failed.offset && k < text.length; k++) {
    if (text.charCodeAt(k) === 0x0a) {
      line++
      lineStart = k + 1
    }
  }
  return { offset: failed.offset, line, column: failed.offset - lineStart + 1, problem: failed.problem }
}
