//! Choosing the nodes that run a job, from the job's `tags` (Dkron's target-node spec).
//!
//! A tag value is `value[:count]`. A node qualifies when it is alive and has every job tag with
//! exactly that value; the smallest count over all tags caps how many nodes run it; no tags
//! means every alive node. Randomness is a parameter so tests are deterministic.

use std::collections::BTreeMap;

/// What placement needs to know about a cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub alive: bool,
    pub tags: BTreeMap<String, String>,
}

/// Splits `value[:count]`. A count that is not a non-negative integer is an error.
pub fn parse_tag_value(raw: &str) -> Result<(&str, Option<usize>), String> {
    match raw.split_once(':') {
        Some((value, count)) if !count.contains(':') => count
            .parse::<usize>()
            .map(|n| (value, Some(n)))
            .map_err(|_| {
                format!("invalid count {count:?} in {raw:?}: use value:count, e.g. true:1")
            }),
        _ => Ok((raw, None)),
    }
}

/// Selects the target nodes. `pick(n)` returns a random index below `n`.
pub fn select_target_nodes<'a>(
    job_tags: Option<&crate::job::StringMap>,
    members: &'a [Candidate],
    mut pick: impl FnMut(usize) -> usize,
) -> Vec<&'a Candidate> {
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    let mut cardinality = usize::MAX;
    for (key, raw) in job_tags.into_iter().flatten() {
        match parse_tag_value(raw) {
            Ok((value, count)) => {
                wanted.push((key, value));
                if let Some(n) = count {
                    cardinality = cardinality.min(n);
                }
            }
            // Validation refuses these; a stored one selects nothing rather than everything.
            Err(_) => return Vec::new(),
        }
    }
    let mut qualifying: Vec<&Candidate> = members
        .iter()
        .filter(|m| m.alive)
        .filter(|m| {
            wanted
                .iter()
                .all(|(k, v)| m.tags.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    if qualifying.len() <= cardinality {
        return qualifying;
    }
    let mut chosen = Vec::with_capacity(cardinality);
    while chosen.len() < cardinality {
        let i = pick(qualifying.len()) % qualifying.len();
        chosen.push(qualifying.swap_remove(i));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, alive: bool, tags: &[(&str, &str)]) -> Candidate {
        Candidate {
            name: name.into(),
            alive,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn select(tags: &[(&str, &str)], members: &[Candidate]) -> Vec<String> {
        let tags: crate::job::StringMap = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut names: Vec<String> = select_target_nodes(Some(&tags), members, |_| 0)
            .into_iter()
            .map(|c| c.name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn dkron_target_cases() {
        let members = [
            node("test1", true, &[("tag", "test"), ("server", "true")]),
            node(
                "test2",
                true,
                &[("tag", "test"), ("extra", "tag"), ("server", "true")],
            ),
            node("test3", true, &[("tag", "test_client")]),
            node("dead", false, &[("tag", "test")]),
        ];
        assert_eq!(select(&[("tag", "test:2")], &members), ["test1", "test2"]);
        assert_eq!(select(&[("tag", "test:1")], &members).len(), 1);
        assert_eq!(select(&[], &members), ["test1", "test2", "test3"]);
        assert_eq!(select(&[("tag", "test_client:1")], &members), ["test3"]);
        assert!(select(&[("tag", "no_tag")], &members).is_empty());
        assert!(select(&[("foo", "bar:1"), ("tag", "test:2")], &members).is_empty());
        assert_eq!(
            select(&[("tag", "test:2"), ("extra", "tag:2")], &members),
            ["test2"]
        );
        assert_eq!(select(&[("server", "true:1")], &members).len(), 1);
        assert!(select(&[("tag", "test:0")], &members).is_empty());
    }

    #[test]
    fn picks_uniformly_with_the_given_rng() {
        let members = [
            node("a", true, &[("x", "1")]),
            node("b", true, &[("x", "1")]),
            node("c", true, &[("x", "1")]),
        ];
        let tags: crate::job::StringMap =
            [("x".to_string(), "1:1".to_string())].into_iter().collect();
        let mut counts = BTreeMap::new();
        for i in 0..999 {
            let got = select_target_nodes(Some(&tags), &members, |n| i % n);
            assert_eq!(got.len(), 1);
            *counts.entry(got[0].name.clone()).or_insert(0) += 1;
        }
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            [333, 333, 333]
        );
    }

    #[test]
    fn tag_values_parse() {
        assert_eq!(parse_tag_value("true:1"), Ok(("true", Some(1))));
        assert_eq!(parse_tag_value("true"), Ok(("true", None)));
        assert_eq!(parse_tag_value("a:b:c"), Ok(("a:b:c", None)));
        assert!(parse_tag_value("test:invalid").is_err());
    }
}
