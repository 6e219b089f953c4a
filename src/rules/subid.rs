//! Subordinate id ranges (`/etc/subuid`): which host uids a user's rootless containers
//! can leave files under. The remover descends only into directories owned by the job's
//! user or by one of these uids.

/// One `start:count` range of subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

impl IdRange {
    pub fn contains(&self, id: u32) -> bool {
        id >= self.start && u64::from(id) < u64::from(self.start) + u64::from(self.count)
    }
}

/// The ranges of the user `name` (uid `uid`) in the text of a subid file: lines
/// `owner:start:count` where owner is the name or the numeric uid (shadow-utils accepts
/// both). Malformed lines and comments are ignored (they give nobody anything).
pub fn ranges_for(text: &str, name: &str, uid: u32) -> Vec<IdRange> {
    let uid_text = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let owner = parts.next()?;
            let start = parts.next()?.parse::<u32>().ok()?;
            let count = parts.next()?.parse::<u32>().ok()?;
            if parts.next().is_some() || count == 0 || (owner != name && owner != uid_text) {
                return None;
            }
            Some(IdRange { start, count })
        })
        .collect()
}

/// The ranges a user namespace of the user may map: never one holding id 0 (root), nor
/// one holding the user's own id `own` (mapped on its own), which the kernel would
/// refuse as overlapping anyway.
pub fn usable_ranges(ranges: Vec<IdRange>, own: u32) -> Vec<IdRange> {
    ranges
        .into_iter()
        .filter(|r| !r.contains(0) && !r.contains(own))
        .collect()
}

/// The arguments of `newuidmap PID ...` (or `newgidmap`) for the namespace the remover
/// works in: `own` and each range mapped to the same ids inside (`inside outside
/// count`), so that owners read inside are the host's.
pub fn id_map_args(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec![own.to_string(), own.to_string(), "1".to_string()];
    for r in ranges {
        args.extend([
            r.start.to_string(),
            r.start.to_string(),
            r.count.to_string(),
        ]);
    }
    args
}

/// The arguments of `newuidmap PID ...` (or `newgidmap`) for the namespace rootless
/// podman runs in, laid out as podman lays out its own: `own` is 0 inside, and the
/// ranges follow one after another from 1. A range that would reach past the last id
/// is left out with those after it.
pub fn podman_id_map_args(own: u32, ranges: &[IdRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut inside: u32 = 1;
    for r in ranges {
        let Some(next) = inside.checked_add(r.count) else {
            break;
        };
        args.extend([inside.to_string(), r.start.to_string(), r.count.to_string()]);
        inside = next;
    }
    args
}

/// The owners whose directories root may empty for a job: the user and the user's
/// subordinate ids. Root (uid 0) is never one of them through a range, only as the
/// job's own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    pub uid: u32,
    pub ranges: Vec<IdRange>,
}

impl Owners {
    pub fn new(uid: u32, ranges: Vec<IdRange>) -> Owners {
        Owners { uid, ranges }
    }

    pub fn allows(&self, owner: u32) -> bool {
        owner == self.uid || (owner != 0 && self.ranges.iter().any(|r| r.contains(owner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "alice:100000:65536\n# comment\nbob:165536:65536\n1002:231072:10\nbad:x:1\neve:1:0\nmal:5:5:5\n";

    #[test]
    fn ranges_by_name_or_uid() {
        assert_eq!(
            ranges_for(TEXT, "alice", 1000),
            vec![IdRange {
                start: 100000,
                count: 65536
            }]
        );
        assert_eq!(ranges_for(TEXT, "carol", 1002).len(), 1);
        assert!(ranges_for(TEXT, "bad", 7).is_empty());
        assert!(ranges_for(TEXT, "eve", 8).is_empty());
        assert!(ranges_for(TEXT, "mal", 9).is_empty());
        assert!(ranges_for(TEXT, "nobody", 65534).is_empty());
    }

    #[test]
    fn namespace_maps_are_the_users_ids_only_and_never_root() {
        let r = |start, count| IdRange { start, count };
        assert_eq!(
            usable_ranges(vec![r(100000, 65536), r(0, 10), r(900, 200), r(5, 1)], 1000),
            vec![r(100000, 65536), r(5, 1)]
        );
        assert_eq!(
            id_map_args(1001, &[r(100000, 65536), r(300000, 10)]),
            ["1001", "1001", "1", "100000", "100000", "65536", "300000", "300000", "10"]
        );
        assert_eq!(id_map_args(1001, &[]), ["1001", "1001", "1"]);
    }

    #[test]
    fn podmans_maps_put_the_user_at_0_and_the_ranges_after_it() {
        let r = |start, count| IdRange { start, count };
        assert_eq!(
            podman_id_map_args(1001, &[r(100000, 65536), r(300000, 10)]),
            ["0", "1001", "1", "1", "100000", "65536", "65537", "300000", "10"]
        );
        assert_eq!(podman_id_map_args(1001, &[]), ["0", "1001", "1"]);
        // Past the last id inside: that range and the ones after it are left out.
        assert_eq!(
            podman_id_map_args(7, &[r(100, u32::MAX), r(5000, 10)]),
            ["0", "7", "1"]
        );
        assert_eq!(
            podman_id_map_args(7, &[r(100, u32::MAX - 1), r(5000, 10)]),
            ["0", "7", "1", "1", "100", &(u32::MAX - 1).to_string()]
        );
    }

    #[test]
    fn owners_are_the_user_and_the_users_range_only() {
        let o = Owners::new(1000, ranges_for(TEXT, "alice", 1000));
        assert!(o.allows(1000));
        assert!(o.allows(100000));
        assert!(o.allows(165535));
        assert!(!o.allows(165536), "bob's range");
        assert!(!o.allows(1001), "another user");
        assert!(!o.allows(0), "root");
        let wide = Owners::new(
            5,
            vec![IdRange {
                start: 0,
                count: 10,
            }],
        );
        assert!(!wide.allows(0), "root never, even inside a range");
        assert!(Owners::new(0, Vec::new()).allows(0), "root's own job");
        let top = IdRange {
            start: u32::MAX - 1,
            count: u32::MAX,
        };
        assert!(top.contains(u32::MAX));
    }
}
