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
}
