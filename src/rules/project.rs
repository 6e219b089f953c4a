//! Which project data a job sees at `/safe_data`.
//!
//! Order: `$HOME/safe_data` if it exists; otherwise the user's groups, primary first and
//! then supplementary sorted by name, each matched against `<root>/<P>` where the group
//! is `P` or `PREFIX<sep>P`. Facts about the filesystem come in from the caller, so the
//! rule itself is pure.

use std::path::{Path, PathBuf};

use super::config::{Config, MultipleProjects};

/// The last component of the path in the "no project" error, as the real service printed it.
pub const NO_PROJECT_COMPONENT: &str = "cannot_determine_project_from_groups";

/// What `$HOME/safe_data` is, seen as the user without following further than `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSafeData {
    Absent,
    Directory,
    NotADirectory,
    DanglingLink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    /// The group that grants it.
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SafeData {
    /// The node has no project data (per-node setting).
    Disabled,
    /// `$HOME/safe_data`.
    Home(PathBuf),
    /// `<root>/<project>`.
    ProjectDir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub safe_data: SafeData,
    pub project: Option<Project>,
    /// One line for the job output: why this data was chosen.
    pub reason: String,
    /// Mount the data read-only (`read_only_projects` in the site config).
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// The exact line the real service printed.
    #[error("Cannot open project data: {}", .0.display())]
    CannotOpen(PathBuf),
    #[error("Cannot open project data: {} is not a directory", .0.display())]
    HomeNotDirectory(PathBuf),
    #[error("Cannot open project data: {} is a dangling symbolic link", .0.display())]
    HomeDangling(PathBuf),
    #[error("--tre-project={requested} is not one of your projects ({})", list_or_none(.yours))]
    NotYours {
        requested: String,
        yours: Vec<String>,
    },
    #[error("you belong to several projects ({}): choose one with --tre-project=PROJECT", .0.join(", "))]
    Ambiguous(Vec<String>),
}

/// Project names are Unix-group-like: they become a path component under the safe_data root.
pub fn valid_project_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "you have none".to_string()
    } else {
        format!("yours: {}", v.join(", "))
    }
}

pub struct ProjectFacts<'a> {
    pub home: &'a Path,
    pub home_safe_data: HomeSafeData,
    /// Where `$HOME/safe_data` leads, every link followed (as the user), when it is a
    /// directory.
    pub home_safe_data_target: Option<&'a Path>,
    /// Primary group first, then supplementary groups (any order; sorted here).
    pub primary_group: &'a str,
    pub supplementary_groups: &'a [String],
    pub requested: Option<&'a str>,
}

/// The user's groups in the documented order: primary, then the rest sorted by name.
pub fn ordered_groups(primary: &str, supplementary: &[String]) -> Vec<String> {
    let mut rest: Vec<String> = supplementary
        .iter()
        .filter(|g| g.as_str() != primary)
        .cloned()
        .collect();
    rest.sort();
    rest.dedup();
    std::iter::once(primary.to_string()).chain(rest).collect()
}

/// Projects the groups grant, in group order, without duplicates.
pub fn user_projects(
    groups: &[String],
    config: &Config,
    is_project_dir: &dyn Fn(&Path) -> bool,
) -> Vec<Project> {
    let mut found: Vec<Project> = Vec::new();
    for group in groups {
        let mut names = vec![group.as_str()];
        let sep = config.project_group_separator.as_str();
        if !sep.is_empty() {
            // Longest suffix first: `tre-a-b` tries `a-b`, then `b`.
            names.extend(
                group
                    .match_indices(sep)
                    .map(|(i, _)| &group[i + sep.len()..]),
            );
        }
        let hit = names.into_iter().find(|name| {
            valid_project_name(name) && is_project_dir(&config.safe_data_root.join(name))
        });
        if let Some(name) = hit {
            if !found.iter().any(|p| p.name == name) {
                found.push(Project {
                    name: name.to_string(),
                    group: group.clone(),
                });
            }
        }
    }
    found
}

pub fn resolve(
    facts: &ProjectFacts<'_>,
    config: &Config,
    is_project_dir: &dyn Fn(&Path) -> bool,
) -> Result<Resolution, ProjectError> {
    let groups = ordered_groups(facts.primary_group, facts.supplementary_groups);
    let projects = user_projects(&groups, config, is_project_dir);
    let names = || projects.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let chosen = match facts.requested {
        Some(requested) => match projects.iter().find(|p| p.name == requested) {
            Some(p) => Some((
                p.clone(),
                format!("chosen with --tre-project (group {})", p.group),
            )),
            None => {
                return Err(ProjectError::NotYours {
                    requested: requested.to_string(),
                    yours: names(),
                })
            }
        },
        None => None,
    };
    if !config.safe_data {
        let project = chosen.map(|(p, _)| p).or_else(|| projects.first().cloned());
        return Ok(Resolution {
            safe_data: SafeData::Disabled,
            project,
            reason: "this node has no project data".into(),
            read_only: false,
        });
    }
    let home_data = facts.home.join("safe_data");
    match facts.home_safe_data {
        HomeSafeData::Directory => {
            let project = chosen.map(|(p, _)| p);
            // A link to a project is that project: its read_only_projects rule holds
            // whichever path leads to it.
            let reached = facts
                .home_safe_data_target
                .and_then(|t| t.strip_prefix(&config.safe_data_root).ok())
                .and_then(|rest| rest.components().next())
                .and_then(|c| c.as_os_str().to_str());
            let read_only = config.safe_data_read_only(project.as_ref().map(|p| p.name.as_str()))
                || reached.is_some_and(|p| config.safe_data_read_only(Some(p)));
            return Ok(Resolution {
                safe_data: SafeData::Home(home_data),
                read_only,
                project,
                reason: "your $HOME/safe_data exists".into(),
            });
        }
        HomeSafeData::NotADirectory => return Err(ProjectError::HomeNotDirectory(home_data)),
        HomeSafeData::DanglingLink => return Err(ProjectError::HomeDangling(home_data)),
        HomeSafeData::Absent => {}
    }
    let (project, reason) = match chosen {
        Some(c) => c,
        None => match projects.as_slice() {
            [] => {
                return Err(ProjectError::CannotOpen(
                    config.safe_data_root.join(NO_PROJECT_COMPONENT),
                ))
            }
            [only] => (
                only.clone(),
                format!("your only project (group {})", only.group),
            ),
            [first, ..] => match config.multiple_projects {
                MultipleProjects::Refuse => return Err(ProjectError::Ambiguous(names())),
                MultipleProjects::First => (
                    first.clone(),
                    format!(
                        "first of your projects {} (group {}); choose with --tre-project",
                        names().join(", "),
                        first.group
                    ),
                ),
            },
        },
    };
    Ok(Resolution {
        safe_data: SafeData::ProjectDir(config.safe_data_root.join(&project.name)),
        read_only: config.safe_data_read_only(Some(&project.name)),
        project: Some(project),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        assert!(valid_project_name("proj1"));
        assert!(valid_project_name("Proj_2.x-y"));
        for bad in ["", ".", "..", "-x", "a/b", "a b", &"p".repeat(65)] {
            assert!(!valid_project_name(bad), "{bad:?}");
        }
    }

    fn dirs(list: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p: &Path| list.iter().any(|d| Path::new(d) == p)
    }

    fn facts<'a>(
        primary: &'a str,
        sup: &'a [String],
        home: HomeSafeData,
        req: Option<&'a str>,
    ) -> ProjectFacts<'a> {
        ProjectFacts {
            home: Path::new("/home/alice"),
            home_safe_data: home,
            home_safe_data_target: None,
            primary_group: primary,
            supplementary_groups: sup,
            requested: req,
        }
    }

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    const EXISTING: &[&str] = &["/safe_data/proj1", "/safe_data/proj2", "/safe_data/proj3"];

    #[test]
    fn single_project_group_is_found() {
        let sup = groups(&["proj1"]);
        let r = resolve(
            &facts("alice", &sup, HomeSafeData::Absent, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(r.safe_data, SafeData::ProjectDir("/safe_data/proj1".into()));
        assert_eq!(r.project.unwrap().name, "proj1");
    }

    #[test]
    fn prefixed_group_names_its_project() {
        let sup = groups(&["tre-proj3"]);
        let r = resolve(
            &facts("dave", &sup, HomeSafeData::Absent, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(
            r.project,
            Some(Project {
                name: "proj3".into(),
                group: "tre-proj3".into()
            })
        );
        let no_prefixes = Config {
            project_group_separator: String::new(),
            ..Config::default()
        };
        assert!(resolve(
            &facts("dave", &sup, HomeSafeData::Absent, None),
            &no_prefixes,
            &dirs(EXISTING)
        )
        .is_err());
    }

    #[test]
    fn no_project_gives_the_services_exact_line() {
        let sup = groups(&["other"]);
        let e = resolve(
            &facts("bob", &sup, HomeSafeData::Absent, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot open project data: /safe_data/cannot_determine_project_from_groups"
        );
    }

    #[test]
    fn home_safe_data_wins() {
        let sup = groups(&["proj1"]);
        let r = resolve(
            &facts("alice", &sup, HomeSafeData::Directory, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(r.safe_data, SafeData::Home("/home/alice/safe_data".into()));
        let none = groups(&[]);
        assert!(resolve(
            &facts("bob", &none, HomeSafeData::Directory, None),
            &Config::default(),
            &dirs(EXISTING)
        )
        .is_ok());
    }

    #[test]
    fn home_safe_data_that_is_not_a_directory_is_named() {
        let sup = groups(&["proj1"]);
        let e = resolve(
            &facts("alice", &sup, HomeSafeData::NotADirectory, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot open project data: /home/alice/safe_data is not a directory"
        );
        let e = resolve(
            &facts("alice", &sup, HomeSafeData::DanglingLink, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap_err();
        assert!(e.to_string().contains("dangling"));
    }

    #[test]
    fn several_projects_are_refused_by_default_and_listed() {
        let sup = groups(&["proj2", "proj1"]);
        let e = resolve(
            &facts("carol", &sup, HomeSafeData::Absent, None),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "you belong to several projects (proj1, proj2): choose one with --tre-project=PROJECT"
        );
        let first = Config {
            multiple_projects: MultipleProjects::First,
            ..Config::default()
        };
        let r = resolve(
            &facts("carol", &sup, HomeSafeData::Absent, None),
            &first,
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(r.project.unwrap().name, "proj1");
        assert!(r.reason.contains("first of your projects proj1, proj2"));
    }

    #[test]
    fn requested_project_must_be_theirs() {
        let sup = groups(&["proj2", "proj1"]);
        let r = resolve(
            &facts("carol", &sup, HomeSafeData::Absent, Some("proj2")),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(r.safe_data, SafeData::ProjectDir("/safe_data/proj2".into()));
        let e = resolve(
            &facts("carol", &sup, HomeSafeData::Absent, Some("proj3")),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tre-project=proj3 is not one of your projects (yours: proj1, proj2)"
        );
        let none = groups(&["other"]);
        let e = resolve(
            &facts("bob", &none, HomeSafeData::Absent, Some("proj1")),
            &Config::default(),
            &dirs(EXISTING),
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("(you have none)"));
    }

    #[test]
    fn primary_group_comes_first_then_names_sorted() {
        assert_eq!(
            ordered_groups("zeta", &groups(&["b", "zeta", "a", "b"])),
            groups(&["zeta", "a", "b"])
        );
        let first = Config {
            multiple_projects: MultipleProjects::First,
            ..Config::default()
        };
        let sup = groups(&["proj1"]);
        let r = resolve(
            &facts("proj2", &sup, HomeSafeData::Absent, None),
            &first,
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(r.project.unwrap().name, "proj2");
    }

    #[test]
    fn read_only_data_where_the_site_says_so() {
        let sup = groups(&["proj2", "proj1"]);
        let listed = Config {
            read_only_projects: vec!["proj2".into()],
            ..Config::default()
        };
        let pick = |cfg: &Config, p: &'static str, home| {
            resolve(&facts("carol", &sup, home, Some(p)), cfg, &dirs(EXISTING))
                .unwrap()
                .read_only
        };
        assert!(pick(&listed, "proj2", HomeSafeData::Absent));
        assert!(!pick(&listed, "proj1", HomeSafeData::Absent));
        assert!(!pick(&Config::default(), "proj2", HomeSafeData::Absent));
        let all = Config {
            read_only_projects: vec!["*".into()],
            ..Config::default()
        };
        assert!(pick(&all, "proj1", HomeSafeData::Absent));
        assert!(pick(&all, "proj1", HomeSafeData::Directory));
    }

    #[test]
    fn node_without_safe_data_needs_no_project() {
        let off = Config {
            safe_data: false,
            ..Config::default()
        };
        let none = groups(&["other"]);
        let r = resolve(
            &facts("bob", &none, HomeSafeData::Absent, None),
            &off,
            &dirs(EXISTING),
        )
        .unwrap();
        assert_eq!(r.safe_data, SafeData::Disabled);
    }

    #[test]
    fn group_names_that_are_not_path_components_never_match() {
        let sup = groups(&["..", "a/b"]);
        let all = |_: &Path| true;
        assert!(user_projects(&sup, &Config::default(), &all)
            .iter()
            .all(|p| p.name != ".." && !p.name.contains('/')));
    }

    #[test]
    fn a_home_link_to_a_read_only_project_is_read_only() {
        let mut c = Config {
            read_only_projects: vec!["proj1".into()],
            ..Config::default()
        };
        c.safe_data_root = PathBuf::from("/safe_data");
        let sup = groups(&["proj1"]);
        let mut f = facts("alice", &sup, HomeSafeData::Directory, None);
        for (target, read_only) in [
            ("/safe_data/proj1", true),
            ("/safe_data/proj1/sub/dir", true),
            ("/safe_data/proj2", false),
            ("/home/alice/mydata", false),
            ("/safe_data_other/proj1", false),
        ] {
            f.home_safe_data_target = Some(Path::new(target));
            let r = resolve(&f, &c, &dirs(&[])).unwrap();
            assert_eq!(r.read_only, read_only, "{target}");
            assert_eq!(r.safe_data, SafeData::Home("/home/alice/safe_data".into()));
        }
    }
}
