// Tag filters: Unix shell-style wildcards with the semantics of Python's fnmatch, which is what
// Quay applies to `root_rule.rule_value` — so a rule copied from Quay selects the same tags here.
//   *      any run of characters (including none)
//   ?      exactly one character
//   [seq]  one character in seq (ranges like a-z allowed); [!seq] one character not in seq
//   a `[` without a closing `]` is a literal `[`; matching is case-sensitive (fnmatch on POSIX).

const REGEX_SPECIAL = /[.*+?^${}()|[\]\\/]/g;

/** Translates one glob into an anchored regular expression, as Python's fnmatch.translate does. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  let i = 0;
  const n = glob.length;
  while (i < n) {
    const c = glob[i++]!;
    if (c === '*') {
      // Consecutive stars mean the same as one.
      if (!out.endsWith('.*')) out += '.*';
    } else if (c === '?') {
      out += '.';
    } else if (c === '[') {
      let j = i;
      if (j < n && glob[j] === '!') j++;
      if (j < n && glob[j] === ']') j++;
      while (j < n && glob[j] !== ']') j++;
      if (j >= n) {
        out += '\\[';
        continue;
      }
      let body = glob.slice(i, j);
      i = j + 1;
      // Backslashes are literal inside a set in fnmatch; escape them (and a literal `]` first).
      body = body.replace(/\\/g, '\\\\');
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      else if (body.startsWith('^')) body = `\\${body}`;
      // A leading `]` is a member of the set, not its end.
      if (body.startsWith(']')) body = `\\${body}`;
      else if (body.startsWith('^]')) body = `^\\${body.slice(1)}`;
      out += `[${body}]`;
    } else {
      out += c.replace(REGEX_SPECIAL, '\\$&');
    }
  }
  // `s`: `*` and `?` match newlines too, as fnmatch's (?s:...) does.
  return new RegExp(`^(?:${out})$`, 's');
}

/** A compiled list of globs: a tag is kept when any of them matches. */
export class TagFilter {
  private readonly patterns: RegExp[];

  constructor(readonly globs: string[]) {
    this.patterns = globs.map(globToRegExp);
  }

  matches(tag: string): boolean {
    return this.patterns.some((p) => p.test(tag));
  }

  filter(tags: string[]): string[] {
    return tags.filter((t) => this.matches(t));
  }
}

/** Why a glob list is unusable, or undefined when it is fine. */
export function invalidGlobs(value: unknown): string | undefined {
  if (!Array.isArray(value) || value.length === 0) return 'rule_value must be a list with at least one tag pattern';
  for (const g of value) {
    if (typeof g !== 'string' || g.trim() === '') return 'every tag pattern in rule_value must be a non-empty string';
    if (g.length > 255) return 'a tag pattern in rule_value is longer than 255 characters';
  }
  if (value.length > 100) return 'rule_value has more than 100 tag patterns';
  return undefined;
}
