//! Shell-style globs (`*`, `?`) on a shared object's basename.
//!
//! Written by hand rather than with `globset`: the agent only needs these two
//! metacharacters on short names, and `globset` would pull a regex engine into
//! a library that is preloaded into every process.

/// True when `name` matches `pattern`, where `*` matches any run of bytes and
/// `?` any single byte.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, name index).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("*", "anything.so"));
        assert!(matches("_fixture*", "_fixture.cpython-312-x86_64-linux-gnu.so"));
        assert!(matches("*.so", "a.so"));
        assert!(matches("a?c", "abc"));
        assert!(matches("*json*", "_json.cpython-311.so"));
        assert!(!matches("*json*", "_pickle.so"));
        assert!(!matches("a?c", "ac"));
        assert!(!matches("lib*.so", "libfoo.so.1"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
    }

    #[test]
    fn a_star_matches_any_run_even_an_empty_one() {
        assert!(matches("*", ""));
        assert!(matches("**", "abc"));
        assert!(matches("a**b", "ab"));
        assert!(matches("abc***", "abc"));
        assert!(matches("*a", "ba"));
        assert!(!matches("*a", "ab"));
        assert!(matches("*.so*", "lib.so.1"));
        assert!(matches("lib*.so*", "libfoo.so"));
    }

    #[test]
    fn a_star_gives_back_what_a_later_literal_needs() {
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(matches("a*b*c", "abbbc"));
        assert!(!matches("a*b*c", "abcb"));
        assert!(matches("*ab", "aab"));
        assert!(matches("*aab", "aaaab"));
        assert!(!matches("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaa"));
        assert!(matches("*a*a*a*b", "aaaaaaaaaaaaaaaaaaab"));
    }

    #[test]
    fn a_question_mark_is_one_byte() {
        assert!(!matches("?", ""));
        assert!(matches("*?", "x"));
        assert!(!matches("*?", ""));
        assert!(!matches("a?", "abc"));
        assert!(matches("???", "abc"));
        // Bytes, not characters: "é" is two.
        assert!(!matches("?", "é"));
        assert!(matches("??", "é"));
    }

    #[test]
    fn everything_else_is_literal() {
        assert!(!matches("ABC", "abc"));
        assert!(!matches("abcd", "abc"));
        assert!(!matches("abc", "abcd"));
        assert!(matches("[ab].so", "[ab].so"));
        assert!(!matches("[ab].so", "a.so"));
        assert!(!matches("a\\*", "ab"));
        assert!(matches("a\\*", "a\\b"));
    }
}
