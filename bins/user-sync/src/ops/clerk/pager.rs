//! Reading a list of the Backend API page by page: the answers' two shapes; cursor paging
//! (`starting_after`) where the endpoint has it; and, where it doesn't, offset paging that
//! misses nothing when objects come and go mid-listing. No I/O.
//!
//! Clerk's `GET /users` says why the cursor matters: "a large `offset` has to walk and
//! discard every row before it, so it gets progressively slower and eventually times out".
//! Only `/users` has a cursor today; the other lists are paged by offset.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::snapshot::id_of;

/// Clerk's documented maximum page size for its list endpoints.
pub const MAX_PAGE_SIZE: u32 = 500;

/// One page of a list.
#[derive(Debug)]
pub(crate) struct Page {
    /// The objects, as Clerk sent them.
    pub(crate) items: Vec<Box<RawValue>>,
    /// `total_count`, where the endpoint gives it.
    pub(crate) total: Option<u64>,
}

/// The list answers other than `/users`'s bare array.
#[derive(Deserialize)]
struct Wrapped {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// A list answer: `/users` answers a bare array, the others `{"data": […], "total_count"}`.
/// (Told apart by the first byte: serde's untagged enums can't hold raw values.)
pub(super) fn read_list(body: &[u8]) -> Result<Page, serde_json::Error> {
    if body.trim_ascii_start().first() == Some(&b'[') {
        let items: Vec<Box<RawValue>> = serde_json::from_slice(body)?;
        return Ok(Page { items, total: None });
    }
    let wrapped: Wrapped = serde_json::from_slice(body)?;
    Ok(Page {
        items: wrapped.data,
        total: wrapped.total_count,
    })
}

/// Items re-read at the start of each page: offset paging skips an object when an earlier
/// one is deleted between two requests; starting each page this many items early catches
/// up to that many deletions per page (ids already seen are dropped).
const OVERLAP: u64 = 20;

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Position {
    /// `offset=<n>`.
    Offset(u64),
    /// `starting_after=<id>` (absent for the first page).
    After(Option<String>),
}

/// Paging over a list sorted oldest first, without I/O: where to ask for next, which items
/// of an answer are new, and when the list is done.
#[derive(Debug)]
pub(super) struct Pager {
    size: u32,
    position: Position,
    previous: std::collections::HashSet<String>,
    /// The ids of the last cursor page, in order: where to step back to.
    last_page: Vec<String>,
    done: bool,
}

impl Pager {
    /// Offset paging by `size` (clamped to 1..=[`MAX_PAGE_SIZE`]).
    pub(crate) fn new(size: u32) -> Self {
        Pager {
            size: size.clamp(1, MAX_PAGE_SIZE),
            position: Position::Offset(0),
            previous: std::collections::HashSet::new(),
            last_page: Vec::new(),
            done: false,
        }
    }

    /// Cursor paging by `size`: each page starts after the last id of the one before.
    pub(crate) fn cursor(size: u32) -> Self {
        Pager {
            position: Position::After(None),
            ..Pager::new(size)
        }
    }

    /// Where to ask for next, or `None` when the list is done.
    pub(super) fn next(&self) -> Option<&Position> {
        (!self.done).then_some(&self.position)
    }

    /// The offset to ask for next (offset paging), or `None` when the list is done.
    #[cfg(test)]
    fn next_offset(&self) -> Option<u64> {
        match self.next()? {
            Position::Offset(offset) => Some(*offset),
            Position::After(_) => None,
        }
    }

    /// The page size to ask for.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Takes the answer for [`Pager::next`]: the items not already seen, in order. A full
    /// page with nothing new means the server ignores `offset` or `starting_after` (it would
    /// never end).
    pub(crate) fn take(&mut self, items: Vec<Box<RawValue>>) -> Result<Vec<Box<RawValue>>, String> {
        if let Position::After(after) = &self.position {
            return self.take_after(after.clone(), items);
        }
        let Position::Offset(offset) = self.position else {
            unreachable!("cursor pages return above")
        };
        let full = items.len() >= self.size as usize;
        let (ids, fresh) = self.unseen(items);
        if full && fresh.is_empty() {
            return Err(format!(
                "the page at offset {offset} holds only objects already read: the server \
                 ignores `offset` (is CLERK_API_URL Clerk's Backend API?)"
            ));
        }
        if full {
            let overlap = OVERLAP.min(u64::from(self.size) - 1);
            self.position = Position::Offset(offset + u64::from(self.size) - overlap);
            self.previous = ids.into_iter().flatten().collect();
        } else {
            self.done = true;
        }
        Ok(fresh)
    }

    /// A cursor page: Clerk's rule is to stop at a page shorter than `limit`; otherwise the
    /// next page starts after this one's last id. Objects of the page before are dropped
    /// (they come again after a [`Pager::step_back`]).
    fn take_after(
        &mut self,
        after: Option<String>,
        items: Vec<Box<RawValue>>,
    ) -> Result<Vec<Box<RawValue>>, String> {
        let shown = after.as_deref().unwrap_or("the start");
        let full = items.len() >= self.size as usize;
        let (ids, fresh) = self.unseen(items);
        let last = ids.last().cloned().flatten();
        if !full {
            self.done = true;
            return Ok(fresh);
        }
        let last = last
            .ok_or_else(|| format!("the page after {shown} ends with an object without an id"))?;
        if after.as_deref() == Some(last.as_str()) || self.previous.contains(&last) {
            return Err(format!(
                "the page after {shown} holds only objects already read: the server ignores \
                 `starting_after` (is CLERK_API_URL Clerk's Backend API?)"
            ));
        }
        self.last_page = ids.into_iter().flatten().collect();
        self.previous = self.last_page.iter().cloned().collect();
        self.position = Position::After(Some(last));
        Ok(fresh)
    }

    /// A page's ids, in order, and its items not on the page read before.
    fn unseen(&self, items: Vec<Box<RawValue>>) -> (Vec<Option<String>>, Vec<Box<RawValue>>) {
        let ids: Vec<Option<String>> = items.iter().map(|item| id_of(item)).collect();
        let fresh = items
            .into_iter()
            .zip(&ids)
            .filter(|(_, id)| id.as_ref().is_none_or(|id| !self.previous.contains(id)))
            .map(|(item, _)| item)
            .collect();
        (ids, fresh)
    }

    /// The cursor's object was refused (deleted between two pages: Clerk's documentation
    /// doesn't say what it answers then): start after the object before it on the last
    /// page instead; what comes again is dropped. `false` when there is none to step back
    /// to.
    pub(crate) fn step_back(&mut self) -> bool {
        let Position::After(Some(current)) = &self.position else {
            return false;
        };
        let Some(i) = self.last_page.iter().position(|id| id == current) else {
            return false;
        };
        let Some(earlier) = i.checked_sub(1).map(|j| self.last_page[j].clone()) else {
            return false;
        };
        self.last_page.truncate(i);
        self.position = Position::After(Some(earlier));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(ids: &[u32]) -> Vec<Box<RawValue>> {
        ids.iter()
            .map(|i| RawValue::from_string(format!(r#"{{"id":"u{i}"}}"#)).unwrap())
            .collect()
    }

    fn ids(items: &[Box<RawValue>]) -> Vec<String> {
        items.iter().filter_map(|i| id_of(i)).collect()
    }

    /// Serves `list` (oldest first) as Clerk would, and reads it with a pager.
    fn read_all(
        list: &[u32],
        size: u32,
        mut between_pages: impl FnMut(&mut Vec<u32>),
    ) -> Vec<String> {
        let mut list = list.to_vec();
        let mut pager = Pager::new(size);
        let mut read = Vec::new();
        while let Some(offset) = pager.next_offset() {
            let page: Vec<u32> = list
                .iter()
                .skip(offset as usize)
                .take(pager.size() as usize)
                .copied()
                .collect();
            read.extend(ids(&pager.take(objects(&page)).unwrap()));
            between_pages(&mut list);
        }
        read
    }

    #[test]
    fn paging_reads_everything_once_and_ends() {
        let list: Vec<u32> = (0..95).collect();
        for size in [1, 2, 10, 21, 50, 95, 500] {
            let read = read_all(&list, size, |_| {});
            let want: Vec<String> = list.iter().map(|i| format!("u{i}")).collect();
            assert_eq!(read, want, "size {size}");
        }
        assert!(read_all(&[], 10, |_| {}).is_empty());
    }

    #[test]
    fn paging_misses_nothing_when_objects_are_deleted_or_added_mid_listing() {
        let list: Vec<u32> = (0..200).collect();
        // Before each next page, the oldest remaining object is deleted and a new one added.
        let mut next_new = 1000;
        let read = read_all(&list, 30, |l| {
            l.remove(0);
            l.push(next_new);
            next_new += 1;
        });
        for i in 30..200 {
            assert!(read.contains(&format!("u{i}")), "u{i} skipped");
        }
        let mut unique = read.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), read.len(), "an object read twice");
    }

    #[test]
    fn a_server_that_ignores_offset_is_an_error_not_an_endless_loop() {
        let mut pager = Pager::new(3);
        assert_eq!(pager.take(objects(&[1, 2, 3])).unwrap().len(), 3);
        let e = pager.take(objects(&[1, 2, 3])).unwrap_err();
        assert!(e.contains("ignores `offset`"), "{e}");
    }

    /// Serves `list` (oldest first) by cursor, as Clerk's `/users` does.
    fn read_by_cursor(list: &[u32], size: u32) -> (Vec<String>, Vec<Option<String>>) {
        let mut pager = Pager::cursor(size);
        let (mut read, mut asked) = (Vec::new(), Vec::new());
        while let Some(position) = pager.next().cloned() {
            let Position::After(after) = position else {
                panic!("a cursor pager asked for an offset")
            };
            let start = after.as_ref().map_or(0, |id| {
                list.iter().position(|i| format!("u{i}") == *id).unwrap() + 1
            });
            let page: Vec<u32> = list
                .iter()
                .skip(start)
                .take(size as usize)
                .copied()
                .collect();
            read.extend(ids(&pager.take(objects(&page)).unwrap()));
            asked.push(after);
        }
        (read, asked)
    }

    #[test]
    fn cursor_paging_reads_everything_once_and_asks_after_each_last_id() {
        let list: Vec<u32> = (0..95).collect();
        for size in [1, 10, 50, 95, 500] {
            let (read, _) = read_by_cursor(&list, size);
            let want: Vec<String> = list.iter().map(|i| format!("u{i}")).collect();
            assert_eq!(read, want, "size {size}");
        }
        let (_, asked) = read_by_cursor(&list, 40);
        assert_eq!(
            asked,
            [None, Some("u39".to_string()), Some("u79".to_string())]
        );
        // A list of exactly one full page asks once more and gets nothing.
        let (read, asked) = read_by_cursor(&(0..10).collect::<Vec<_>>(), 10);
        assert_eq!((read.len(), asked.len()), (10, 2));
    }

    #[test]
    fn a_cursor_object_deleted_between_pages_is_stepped_over() {
        let mut list: Vec<u32> = (0..30).collect();
        let mut pager = Pager::cursor(10);
        let mut read = ids(&pager.take(objects(&list[..10])).unwrap());
        // u9, the cursor, is deleted; the server refuses the cursor: start after u8.
        list.retain(|&i| i != 9);
        assert!(pager.step_back());
        assert_eq!(pager.next(), Some(&Position::After(Some("u8".into()))));
        let start = list.iter().position(|&i| i == 8).unwrap() + 1;
        read.extend(ids(&pager.take(objects(&list[start..start + 10])).unwrap()));
        let start = list.iter().position(|&i| i == 19).unwrap() + 1;
        read.extend(ids(&pager.take(objects(&list[start..])).unwrap()));
        // A full last page: one more, empty, ends it.
        assert!(pager.take(objects(&[])).unwrap().is_empty());
        assert!(pager.next().is_none());
        let want: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
        assert_eq!(read, want, "everything once (u9 was read before it went)");
        // With nothing before the cursor on its page, there is nowhere to step back to.
        let mut pager = Pager::cursor(1);
        pager.take(objects(&[0])).unwrap();
        assert!(!pager.step_back());
    }

    #[test]
    fn a_server_that_ignores_the_cursor_is_an_error_not_an_endless_loop() {
        let mut pager = Pager::cursor(3);
        assert_eq!(pager.take(objects(&[1, 2, 3])).unwrap().len(), 3);
        assert_eq!(pager.next(), Some(&Position::After(Some("u3".into()))));
        let e = pager.take(objects(&[1, 2, 3])).unwrap_err();
        assert!(e.contains("ignores `starting_after`"), "{e}");
    }

    #[test]
    fn lists_read_bare_and_wrapped() {
        let bare = read_list(br#" [{"id":"user_1"},{"id":"user_2"}]"#).unwrap();
        assert_eq!((bare.items.len(), bare.total), (2, None));
        assert_eq!(bare.items[1].get(), r#"{"id":"user_2"}"#);
        let wrapped = read_list(br#"{"data":[{"id":"org_1"}],"total_count":7}"#).unwrap();
        assert_eq!((wrapped.items.len(), wrapped.total), (1, Some(7)));
        assert!(read_list(br#"{"errors":[]}"#).is_err());
    }
}
