//! "Did you mean ...?" for near-miss names.

/// The closest candidate to `word`, phrased as a suggestion, if one is close enough.
pub fn did_you_mean<S: AsRef<str>>(word: &str, candidates: &[S]) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `word` by edit distance (a swap of two letters counts once), if it is close enough to be a typo.
pub fn closest<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(AsRef::as_ref)
        .filter(|c| *c != word)
        .map(|c| (strsim::osa_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let ids = ["backup", "migrate", "reopen"];
        assert_eq!(closest("bakup", &ids), Some("backup"));
        assert_eq!(closest("migrat", &ids), Some("migrate"));
        assert_eq!(closest("zzz", &ids), None);
        assert_eq!(closest("Backup", &ids), Some("backup"));
    }
}
