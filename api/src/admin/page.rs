//! Cursor pagination for admin listings.
//!
//! A listing takes `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and `cursor`, and
//! answers `items` plus `next_cursor`: pass it back as `cursor` for the next page; `null`
//! means there is none. Cursors are opaque to clients. Pages are keyset-based, so rows added
//! while a client pages through are neither skipped nor repeated.

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a client may ask for (the operations' `limit` validators say the same).
pub const MAX_LIMIT: u32 = 200;

/// The page size to serve for the requested `limit`.
pub fn limit(requested: Option<u32>) -> u32 {
    requested.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// Rows to fetch for a page of `limit`: the extra row tells whether another page follows.
pub fn fetch_size(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// Cuts the extra row off `rows` and returns the page with the next page's cursor.
pub fn finish<T>(
    mut rows: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(cursor_of);
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_stay_in_range() {
        assert_eq!(limit(None), DEFAULT_LIMIT);
        assert_eq!(limit(Some(0)), 1);
        assert_eq!(limit(Some(10_000)), MAX_LIMIT);
        assert_eq!(fetch_size(10), 11);
    }

    #[test]
    fn a_full_page_points_at_the_next() {
        let (page, next) = finish(vec![1, 2, 3], 2, |n| n.to_string());

        assert_eq!(page, [1, 2]);
        assert_eq!(next.as_deref(), Some("2"));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let (page, next) = finish(vec![1, 2], 2, |n| n.to_string());

        assert_eq!(page, [1, 2]);
        assert_eq!(next, None);
    }
}
