//! Parsing of `/proc/PID/maps`: which files a process has mapped, and where.

use std::path::PathBuf;

/// A file's identity as the kernel sees it: a uprobe is set on an inode, so two
/// paths (or two containers' views) of one file are one probe target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub executable: bool,
    /// Where in the file the mapping starts.
    pub offset: u64,
    pub file: FileId,
    /// The path as the process sees it (inside its mount namespace).
    pub path: PathBuf,
}

impl Mapping {
    pub fn file_name(&self) -> Option<&str> {
        self.path.file_name()?.to_str()
    }
}

/// File-backed mappings of one maps listing; anonymous and pseudo mappings are skipped.
pub fn parse(listing: &str) -> Vec<Mapping> {
    listing.lines().filter_map(parse_line).collect()
}

// 7f12a4c00000-7f12a4c28000 r-xp 00028000 fe:01 1234567   /usr/lib/x86_64-linux-gnu/libc.so.6
fn parse_line(line: &str) -> Option<Mapping> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let ino: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    if ino == 0 || !path.starts_with('/') {
        return None;
    }
    let major = u64::from_str_radix(major, 16).ok()?;
    let minor = u64::from_str_radix(minor, 16).ok()?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        executable: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        file: FileId {
            dev: libc::makedev(major as u32, minor as u32),
            ino,
        },
        // A replaced or removed file keeps its mapping; the kernel marks it so.
        path: PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_backed_mappings_are_parsed_and_others_skipped() {
        let listing = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 1311 /usr/bin/python3.11
7f12a4c00000-7f12a4c28000 r-xp 00028000 fe:01 1234567                    /opt/lib/libcudart.so.12
7f12a4e00000-7f12a4e21000 rw-p 00000000 00:00 0 \n\
7ffd1d9e4000-7ffd1da05000 rw-p 00000000 00:00 0                          [stack]
7f12a5000000-7f12a5001000 r-xp 00000000 00:1d 42 /tmp/lib with space.so (deleted)
garbage line
";
        let maps = parse(listing);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[1].file_name(), Some("libcudart.so.12"));
        assert!(maps[1].executable && !maps[0].executable);
        assert_eq!(maps[1].start, 0x7f12a4c00000);
        assert_eq!(maps[1].offset, 0x28000);
        assert_eq!(
            maps[1].file,
            FileId {
                dev: libc::makedev(0xfe, 1),
                ino: 1234567
            }
        );
        assert_eq!(maps[2].path, PathBuf::from("/tmp/lib with space.so"));
    }
}
