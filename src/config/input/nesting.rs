//! How deeply the YAML's collections nest, found by one linear walk of the text before
//! libyaml sees it.
//!
//! Why a walk of our own: libyaml (under serde_yaml_ng) takes time that grows about with
//! the square of the depth of flow collections (`[[[[...`: 0.3 s at depth 10,000, 40 s
//! at 100,000, for a 200 KB file; its scanner looks over every open level's possible
//! key for each token), and serde_yaml_ng has no limit that acts in time: its
//! recursion limit (128) applies when the events are turned into values, after libyaml
//! has read them all. So the text is walked first, token by token, by the rules libyaml's
//! scanner uses to find where a token starts and ends (quoted, plain and block scalars,
//! comments, tags, anchors, flow indicators, and its stack of block indentations), and
//! the walk stops at the first collection that opens past the limit.
//!
//! What counts as a level is what libyaml's parser opens: each flow collection (`[`,
//! `{`); each block collection, i.e. each indentation libyaml pushes (a mapping's keys, a
//! sequence's `- ` entries); a sequence written at its mapping's own indentation (`key:`
//! then `- item` at the same column), which pushes no indentation; and the one-pair
//! mapping that a `key: value` entry of a flow sequence is. A key that is itself a
//! collection (`[a, b]: c`) is counted inside the mapping it turns out to start. The
//! count equals the depth libyaml gives (tests below compare them on random text).
//! Brackets inside quoted, plain or block scalars, comments and tags are not counted,
//! so no real config is refused for a `[` in a string. Where libyaml would stop with a
//! syntax error the walk goes on all the same: text past that point never reaches
//! libyaml's deep parse, so counting it can only refuse a file that fails anyway.

use std::ops::Range;

/// Where the walk found a collection opening past the limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line of the collection that opened past the limit.
    pub line: usize,
    /// The keys and indexes leading to it (`extra`, `backends[0].tls`), at most
    /// [`KEY_STEPS`] of them; empty when there is none (e.g. the root is a list).
    pub key: String,
}

/// How many steps of the key path an error names: enough to find the place, short
/// enough to read when the nesting is hundreds of levels of block collections.
const KEY_STEPS: usize = 4;

/// How long a key may be as shown in an error, in characters.
const KEY_CHARS: usize = 40;

/// Walks `text`; `Err` at the first collection that opens deeper than `max` levels.
pub fn check(text: &str, max: usize) -> Result<(), TooDeep> {
    Walk::new(text, max).run().map(|_| ())
}

/// The deepest nesting in `text` (0 for a lone scalar or an empty file).
#[cfg(test)]
pub fn depth(text: &str) -> usize {
    match Walk::new(text, usize::MAX).run() {
        Ok(deepest) => deepest,
        Err(_) => usize::MAX,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Map,
    Seq,
}

/// One block collection: an indentation libyaml pushed.
struct Level {
    col: usize,
    kind: Kind,
    /// `Map`: its latest key (a byte range of the text), for the error's key path.
    key: Option<Range<usize>>,
    /// `Seq`: the index of its current entry. `Map`: the index of the current entry of
    /// a sequence written at the mapping's own indentation, while one is open.
    item: Option<usize>,
}

/// libyaml's "possible simple key" at block level: the token a later `: ` on the same
/// line makes a mapping key (and so where the mapping's indentation is).
struct SimpleKey {
    pos: usize,
    line: usize,
    col: usize,
    /// The key's text when it is a scalar.
    span: Option<Range<usize>>,
    /// The deepest level reached while it was possible: a key that is a collection
    /// (`[a, b]: c`) turns out to sit inside the mapping its `:` opens.
    deepest: usize,
}

/// One open flow collection.
struct Frame {
    seq: bool,
    /// A sequence entry written `key: value` (or `? key`) is a mapping of one pair,
    /// a level of its own, open until the next `,` or the end of the sequence.
    pair: bool,
    /// The deepest level reached in the current entry (since the last `,`), for an
    /// entry that turns out to be the key of such a pair.
    deepest: usize,
}

struct Walk<'a> {
    text: &'a str,
    b: &'a [u8],
    max: usize,
    /// Byte offset, 0-based line and 0-based column in characters (as libyaml counts).
    pos: usize,
    line: usize,
    col: usize,
    /// Open flow collections (`frames.len()`).
    flow: usize,
    frames: Vec<Frame>,
    /// Single-pair mappings open in flow sequences.
    pairs: usize,
    /// Open block collections, innermost last.
    levels: Vec<Level>,
    /// `levels.len()` plus the sequences open at their mapping's indentation.
    block: usize,
    deepest: usize,
    /// libyaml's `simple_key_allowed`.
    allowed: bool,
    key: Option<SimpleKey>,
    /// The document's root is a flow mapping (JSON): its latest key.
    flow_root: Option<Option<Range<usize>>>,
    /// The latest scalar and the flow level it was at (for JSON keys).
    last_scalar: Option<(Range<usize>, usize)>,
}

impl<'a> Walk<'a> {
    fn new(text: &'a str, max: usize) -> Walk<'a> {
        Walk {
            text,
            b: text.as_bytes(),
            max,
            pos: 0,
            line: 0,
            col: 0,
            flow: 0,
            frames: Vec::new(),
            pairs: 0,
            levels: Vec::new(),
            block: 0,
            deepest: 0,
            allowed: true,
            key: None,
            flow_root: None,
            last_scalar: None,
        }
    }

    // ---- the cursor ----

    /// The byte `k` ahead, 0 past the end.
    fn at(&self, k: usize) -> u8 {
        self.b.get(self.pos + k).copied().unwrap_or(0)
    }

    fn is_end(&self, k: usize) -> bool {
        self.pos + k >= self.b.len()
    }

    fn is_blank(&self, k: usize) -> bool {
        matches!(self.at(k), b' ' | b'\t')
    }

    /// libyaml's line breaks: CR, LF, and NEL, LS, PS in UTF-8.
    fn is_break(&self, k: usize) -> bool {
        match self.at(k) {
            b'\r' | b'\n' => true,
            0xC2 => self.at(k + 1) == 0x85,
            0xE2 => self.at(k + 1) == 0x80 && matches!(self.at(k + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    fn is_blankz(&self, k: usize) -> bool {
        self.is_blank(k) || self.is_break(k) || self.is_end(k)
    }

    fn is_breakz(&self, k: usize) -> bool {
        self.is_break(k) || self.is_end(k)
    }

    /// One character forward (not a line break).
    fn skip(&mut self) {
        let width = match self.at(0) {
            b if b < 0x80 => 1,
            b if b & 0xE0 == 0xC0 => 2,
            b if b & 0xF0 == 0xE0 => 3,
            b if b & 0xF8 == 0xF0 => 4,
            _ => 1,
        };
        self.pos = (self.pos + width).min(self.b.len());
        self.col += 1;
    }

    /// One line break forward (CR LF is one).
    fn skip_line(&mut self) {
        let width = match self.at(0) {
            b'\r' if self.at(1) == b'\n' => 2,
            b'\r' | b'\n' => 1,
            0xC2 => 2,
            _ => 3,
        };
        self.pos = (self.pos + width).min(self.b.len());
        self.line += 1;
        self.col = 0;
    }

    /// `---` or `...` at the start of a line, then a blank.
    fn at_document_marker(&self) -> bool {
        self.col == 0
            && (self.b[self.pos..].starts_with(b"---") || self.b[self.pos..].starts_with(b"..."))
            && self.is_blankz(3)
    }

    // ---- levels ----

    fn indent(&self) -> isize {
        self.levels.last().map_or(-1, |l| l.col as isize)
    }

    fn deeper(&mut self) -> Result<(), TooDeep> {
        self.block += 1;
        self.measure()
    }

    fn depth_now(&self) -> usize {
        self.flow + self.pairs + self.block
    }

    fn measure(&mut self) -> Result<(), TooDeep> {
        self.reach(self.depth_now())
    }

    /// Something is `depth` levels deep.
    fn reach(&mut self, depth: usize) -> Result<(), TooDeep> {
        if let Some(k) = &mut self.key {
            k.deepest = k.deepest.max(depth);
        }
        if let Some(f) = self.frames.last_mut() {
            f.deepest = f.deepest.max(depth);
        }
        self.deepest = self.deepest.max(depth);
        if depth > self.max {
            return Err(TooDeep {
                line: self.line + 1,
                key: self.key_path(),
            });
        }
        Ok(())
    }

    /// libyaml's `roll_indent`: a block collection starts at `col` if it is deeper in
    /// than the current one.
    fn roll(&mut self, col: usize, kind: Kind) -> Result<(), TooDeep> {
        if self.flow > 0 || self.indent() >= col as isize {
            return Ok(());
        }
        self.levels.push(Level {
            col,
            kind,
            key: None,
            item: (kind == Kind::Seq).then_some(0),
        });
        self.deeper()
    }

    /// libyaml's `unroll_indent`: block collections deeper in than `col` end.
    fn unroll(&mut self, col: isize) {
        if self.flow > 0 {
            return;
        }
        while self.indent() > col {
            if let Some(l) = self.levels.pop() {
                let open_seq = l.kind == Kind::Map && l.item.is_some();
                self.block -= 1 + usize::from(open_seq);
            }
        }
    }

    /// A `- ` entry in block context, at the current column.
    fn block_entry(&mut self) -> Result<(), TooDeep> {
        let col = self.col;
        if self.indent() < col as isize {
            return self.roll(col, Kind::Seq);
        }
        let Some(top) = self.levels.last_mut() else {
            return Ok(());
        };
        if top.col != col {
            return Ok(());
        }
        match (top.kind, top.item) {
            (Kind::Seq, Some(i)) | (Kind::Map, Some(i)) => top.item = Some(i + 1),
            (Kind::Seq, None) => top.item = Some(0),
            (Kind::Map, None) => {
                // `key:` then `- item` at the key's own column.
                top.item = Some(0);
                return self.deeper();
            }
        }
        Ok(())
    }

    /// A token other than `- ` at a mapping's own column ends the sequence written at
    /// that column (the parser reads it as the mapping's next key).
    fn end_indentless_sequence(&mut self) {
        if let Some(top) = self.levels.last_mut() {
            if top.kind == Kind::Map && top.col == self.col && top.item.is_some() {
                top.item = None;
                self.block -= 1;
            }
        }
    }

    fn key_path(&self) -> String {
        let mut steps: Vec<String> = Vec::new();
        for l in &self.levels {
            if l.kind == Kind::Map {
                if let Some(k) = &l.key {
                    steps.push(self.shown(k));
                }
            }
            if let Some(i) = l.item {
                steps.push(format!("[{i}]"));
            }
        }
        if let Some(Some(k)) = &self.flow_root {
            steps.push(self.shown(k));
        }
        let mut path = String::new();
        for step in steps.iter().take(KEY_STEPS) {
            if !path.is_empty() && !step.starts_with('[') {
                path.push('.');
            }
            path.push_str(step);
        }
        path
    }

    /// A key as an error shows it: on one line, cut to [`KEY_CHARS`].
    fn shown(&self, range: &Range<usize>) -> String {
        let key = self.text.get(range.clone()).unwrap_or("");
        let mut shown: String = key
            .chars()
            .take(KEY_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if key.chars().nth(KEY_CHARS).is_some() {
            shown.push_str("...");
        }
        shown
    }

    // ---- simple keys ----

    /// libyaml's `save_simple_key`, for block level only: flow levels push no
    /// indentation, so their keys cannot change the count.
    fn save_key(&mut self) {
        if self.flow == 0 && self.allowed {
            self.key = Some(SimpleKey {
                pos: self.pos,
                line: self.line,
                col: self.col,
                span: None,
                deepest: self.depth_now(),
            });
        }
    }

    /// libyaml's `remove_simple_key` (of the current level; a flow level's is not kept).
    fn remove_key(&mut self) {
        if self.flow == 0 {
            self.key = None;
        }
    }

    /// A key stops being possible on another line or 1024 bytes on (libyaml's rule).
    fn stale_key(&mut self) {
        if let Some(k) = &self.key {
            if k.line < self.line || k.pos + 1024 < self.pos {
                self.key = None;
            }
        }
    }

    /// Records a scalar's text: as the block key's if it was saved as one here, and as
    /// the latest scalar (a JSON key, if a `:` follows).
    fn scalar_read(&mut self, start: usize, text: Range<usize>) {
        if self.flow == 0 {
            if let Some(k) = self.key.as_mut().filter(|k| k.pos == start) {
                k.span = Some(text.clone());
            }
        }
        self.last_scalar = Some((text, self.flow));
    }

    // ---- the walk ----

    /// Token by token, as libyaml's `fetch_next_token`; returns the deepest level seen.
    fn run(mut self) -> Result<usize, TooDeep> {
        loop {
            self.skip_to_next_token();
            self.stale_key();
            self.unroll(self.col as isize);
            if self.is_end(0) {
                return Ok(self.deepest);
            }
            let c = self.at(0);
            if self.col == 0 && c == b'%' {
                // A directive: one line.
                self.unroll(-1);
                self.remove_key();
                self.allowed = false;
                while !self.is_breakz(0) {
                    self.skip();
                }
                continue;
            }
            if self.at_document_marker() {
                self.unroll(-1);
                self.remove_key();
                self.allowed = false;
                self.flow_root = None;
                for _ in 0..3 {
                    self.skip();
                }
                continue;
            }
            let block_entry = c == b'-' && self.is_blankz(1);
            if self.flow == 0 && !block_entry {
                self.end_indentless_sequence();
            }
            match c {
                b'[' | b'{' => {
                    self.save_key();
                    if self.flow == 0 {
                        self.flow_root = (c == b'{' && self.levels.is_empty()).then_some(None);
                    }
                    self.flow += 1;
                    self.frames.push(Frame {
                        seq: c == b'[',
                        pair: false,
                        deepest: 0,
                    });
                    self.measure()?;
                    self.allowed = true;
                    self.last_scalar = None;
                    self.skip();
                }
                b']' | b'}' => {
                    self.remove_key();
                    self.flow = self.flow.saturating_sub(1);
                    if let Some(inner) = self.frames.pop() {
                        self.pairs -= usize::from(inner.pair);
                        if let Some(outer) = self.frames.last_mut() {
                            outer.deepest = outer.deepest.max(inner.deepest);
                        }
                    }
                    if self.flow == 0 {
                        self.flow_root = None;
                    }
                    self.allowed = false;
                    self.last_scalar = None;
                    self.skip();
                }
                b',' => {
                    self.remove_key();
                    if let Some(f) = self.frames.last_mut() {
                        self.pairs -= usize::from(f.pair);
                        f.pair = false;
                        f.deepest = 0;
                    }
                    self.allowed = true;
                    self.last_scalar = None;
                    self.skip();
                }
                b'-' if block_entry => {
                    if self.flow == 0 {
                        self.block_entry()?;
                    }
                    self.remove_key();
                    self.allowed = true;
                    self.skip();
                }
                b'?' if self.flow > 0 || self.is_blankz(1) => {
                    let col = self.col;
                    self.roll(col, Kind::Map)?;
                    self.open_pair()?;
                    self.remove_key();
                    self.allowed = self.flow == 0;
                    self.skip();
                }
                b':' if self.flow > 0 || self.is_blankz(1) => {
                    self.value()?;
                    self.skip();
                }
                b'*' | b'&' => {
                    self.save_key();
                    self.allowed = false;
                    self.skip();
                    while self.at(0).is_ascii_alphanumeric() || matches!(self.at(0), b'_' | b'-') {
                        self.skip();
                    }
                }
                b'!' => {
                    self.save_key();
                    self.allowed = false;
                    self.tag();
                }
                b'|' | b'>' if self.flow == 0 => {
                    self.remove_key();
                    self.allowed = true;
                    self.block_scalar();
                }
                b'\'' | b'"' => {
                    self.save_key();
                    self.allowed = false;
                    self.quoted(c == b'\'');
                }
                _ if self.plain_start() => {
                    self.save_key();
                    self.allowed = false;
                    self.plain();
                }
                // libyaml stops here ("cannot start any token"); the walk goes on.
                _ => self.skip(),
            }
        }
    }

    /// libyaml's `scan_to_next_token`: spaces, comments and line breaks.
    fn skip_to_next_token(&mut self) {
        loop {
            if self.col == 0 && self.b[self.pos..].starts_with("\u{FEFF}".as_bytes()) {
                self.skip();
            }
            while self.at(0) == b' ' || ((self.flow > 0 || !self.allowed) && self.at(0) == b'\t') {
                self.skip();
            }
            if self.at(0) == b'#' {
                while !self.is_breakz(0) {
                    self.skip();
                }
            }
            if !self.is_break(0) {
                return;
            }
            self.skip_line();
            if self.flow == 0 {
                self.allowed = true;
            }
        }
    }

    /// `:` as a value indicator.
    fn value(&mut self) -> Result<(), TooDeep> {
        if self.flow > 0 {
            self.open_pair()?;
            if self.flow == 1 {
                if let (Some(root), Some((span, 1))) = (&mut self.flow_root, &self.last_scalar) {
                    *root = Some(span.clone());
                }
            }
            self.allowed = false;
        } else if let Some(key) = self.key.take() {
            let outer = self.levels.len();
            self.roll(key.col, Kind::Map)?;
            if self.levels.len() > outer {
                // All the key held is one level deeper, in the mapping just opened.
                self.reach(key.deepest + 1)?;
            }
            if let Some(top) = self.levels.last_mut() {
                if top.kind == Kind::Map && top.col == key.col {
                    top.key = key.span;
                }
            }
            self.allowed = false;
        } else {
            let col = self.col;
            self.roll(col, Kind::Map)?;
            self.allowed = true;
        }
        self.last_scalar = None;
        Ok(())
    }

    /// `?` or `:` in a flow sequence: the entry is a mapping of one pair, which holds
    /// what the entry has held so far (its key).
    fn open_pair(&mut self) -> Result<(), TooDeep> {
        let Some(f) = self.frames.last_mut().filter(|f| f.seq && !f.pair) else {
            return Ok(());
        };
        f.pair = true;
        let key_depth = f.deepest + 1;
        self.pairs += 1;
        let now = self.depth_now();
        self.reach(key_depth.max(now))
    }

    /// Whether the character here starts a plain scalar (libyaml's test).
    fn plain_start(&self) -> bool {
        let c = self.at(0);
        let indicator = self.is_blankz(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c);
        !indicator
            || (c == b'-' && !self.is_blank(1))
            || (self.flow == 0 && matches!(c, b'?' | b':') && !self.is_blankz(1))
    }

    /// A plain scalar, which may go on over several lines.
    fn plain(&mut self) {
        let start = self.pos;
        let mut end = self.pos;
        let indent = self.indent() + 1;
        let mut leading_blanks = false;
        'scalar: loop {
            if self.at_document_marker() || self.at(0) == b'#' {
                break;
            }
            while !self.is_blankz(0) {
                let c = self.at(0);
                if self.flow > 0 && c == b':' && b",?[]{}".contains(&self.at(1)) {
                    // libyaml stops here ("found unexpected ':'").
                    break 'scalar;
                }
                if (c == b':' && self.is_blankz(1)) || (self.flow > 0 && b",[]{}".contains(&c)) {
                    break;
                }
                leading_blanks = false;
                self.skip();
                end = self.pos;
            }
            if !(self.is_blank(0) || self.is_break(0)) {
                break;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if self.flow == 0 && (self.col as isize) < indent {
                break;
            }
        }
        if leading_blanks {
            self.allowed = true;
        }
        self.scalar_read(start, start..end);
    }

    /// A single- or double-quoted scalar, which may go on over several lines.
    fn quoted(&mut self, single: bool) {
        let start = self.pos;
        let quote = self.at(0);
        self.skip();
        let inner = self.pos;
        loop {
            if self.is_end(0) || self.at_document_marker() {
                // libyaml stops here (an unclosed quote).
                self.scalar_read(start, inner..self.pos);
                return;
            }
            let c = self.at(0);
            if single && c == b'\'' && self.at(1) == b'\'' {
                self.skip();
                self.skip();
            } else if c == quote {
                let end = self.pos;
                self.skip();
                self.scalar_read(start, inner..end);
                return;
            } else if !single && c == b'\\' {
                self.skip();
                if self.is_break(0) {
                    self.skip_line();
                } else if !self.is_end(0) {
                    self.skip();
                }
            } else if self.is_break(0) {
                self.skip_line();
            } else {
                self.skip();
            }
        }
    }

    /// A tag: `!<uri>`, or `!handle!suffix` / `!suffix` of URI characters.
    fn tag(&mut self) {
        self.skip();
        let verbatim = self.at(0) == b'<';
        if verbatim {
            self.skip();
        }
        loop {
            let c = self.at(0);
            let uri = c.is_ascii_alphanumeric() || b"-_;/?:@&=+$.%!~*'()".contains(&c);
            if self.is_end(0) || !(uri || verbatim && b",[]".contains(&c)) {
                break;
            }
            self.skip();
        }
        if verbatim && self.at(0) == b'>' {
            self.skip();
        }
    }

    /// A literal (`|`) or folded (`>`) block scalar: its header line, then every line
    /// indented at least as far as its first one.
    fn block_scalar(&mut self) {
        self.skip();
        let mut increment: isize = 0;
        let digit = |c: u8| (b'1'..=b'9').contains(&c).then(|| isize::from(c - b'0'));
        if matches!(self.at(0), b'+' | b'-') {
            self.skip();
            if let Some(d) = digit(self.at(0)) {
                increment = d;
                self.skip();
            }
        } else if let Some(d) = digit(self.at(0)) {
            increment = d;
            self.skip();
            if matches!(self.at(0), b'+' | b'-') {
                self.skip();
            }
        }
        // The rest of the header line: blanks and a comment (anything else is a libyaml
        // error, and is passed over here).
        while !self.is_breakz(0) {
            self.skip();
        }
        if self.is_break(0) {
            self.skip_line();
        }
        let parent = self.indent();
        let mut indent: isize = if increment > 0 {
            if parent >= 0 {
                parent + increment
            } else {
                increment
            }
        } else {
            0
        };
        if !self.block_scalar_breaks(&mut indent, parent) {
            return;
        }
        while self.col as isize == indent && !self.is_end(0) {
            while !self.is_breakz(0) {
                self.skip();
            }
            if self.is_break(0) {
                self.skip_line();
            }
            if !self.block_scalar_breaks(&mut indent, parent) {
                return;
            }
        }
    }

    /// libyaml's `scan_block_scalar_breaks`: empty lines and the indentation of the next
    /// one, fixing the scalar's indentation from its first line if no indicator did.
    /// False where libyaml stops (a tab in the indentation).
    fn block_scalar_breaks(&mut self, indent: &mut isize, parent: isize) -> bool {
        let mut max_indent: isize = 0;
        loop {
            while (*indent == 0 || (self.col as isize) < *indent) && self.at(0) == b' ' {
                self.skip();
            }
            max_indent = max_indent.max(self.col as isize);
            if (*indent == 0 || (self.col as isize) < *indent) && self.at(0) == b'\t' {
                return false;
            }
            if !self.is_break(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(parent + 1).max(1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep_flow(n: usize) -> String {
        format!(
            "backends: [127.0.0.1:9001]\nextra: {}{}\n",
            "[".repeat(n),
            "]".repeat(n)
        )
    }

    #[test]
    fn counts_block_levels() {
        assert_eq!(depth(""), 0);
        assert_eq!(depth("# only a comment\n"), 0);
        assert_eq!(depth("just a scalar\n"), 0);
        assert_eq!(depth("a: 1\nb: 2\n"), 1);
        assert_eq!(depth("a:\n  b: 1\n"), 2);
        assert_eq!(depth("a:\n  b:\n    c: 1\nd: 2\n"), 3);
        assert_eq!(depth("- 1\n- 2\n"), 1);
        assert_eq!(depth("- - - x\n"), 3);
        assert_eq!(depth("- a: 1\n  b: 2\n- c: 3\n"), 2);
        // A sequence at its mapping's own indentation is a level of its own.
        assert_eq!(depth("a:\n- x\n- y\nb: 1\n"), 2);
        assert_eq!(depth("a:\n- x: 1\n  y: 2\nb: 1\n"), 3);
        assert_eq!(depth("? a\n: b\n"), 1);
        assert_eq!(depth("---\na:\n  b: 1\n---\nc: 1\n...\n"), 2);
    }

    #[test]
    fn counts_flow_levels() {
        assert_eq!(depth("[]"), 1);
        assert_eq!(depth("[[[]]]"), 3);
        assert_eq!(depth("a: [b, {c: d}]\n"), 3);
        assert_eq!(depth("a: [b, c]\nd: {e: f}\n"), 2);
        assert_eq!(depth("{\"a\": [1, {\"b\": [2]}], \"c\": 3}"), 4);
        assert_eq!(depth("a: [\n  b,\n  [c],\n]\n"), 3);
        assert_eq!(depth(&deep_flow(100)), 101);
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let texts = [
            "a: \"[[[[{{{{\"\n",
            "a: '[[[[{{{{'\n",
            "a: 'it''s [[[['\n",
            "a: \"\\\"[[[[\"\n",
            "a: x [[[[ {{{{\n",
            "a: /path[1]{2}\n",
            "a: 1 # [[[[ {{{{\n",
            "# [[[[\na: 1\n",
            "a: !t'x y[[[[\n",
            "a: &x1 1\nb: *x1\n",
            "a: \"multi\n  line [[[[\n  \"\n",
            "a: plain\n  continued [[[[\n",
            "a: plain\n  [[[[ also continued\n",
            "a: |\n  [[[[ {{{{\n  'unclosed\nb: 1\n",
            "a: >-\n  [[[[\n\n  \"\nb: 1\n",
        ];
        for t in texts {
            assert_eq!(depth(t), 1, "{t:?}");
        }
        assert_eq!(depth("a: ['[[[[', \"]]]]\", x]\n"), 2);
        assert_eq!(depth("a: [b # [[[[\n, c]\n"), 2);
        // In a flow collection a bracket always counts, as libyaml reads it.
        assert_eq!(depth("a: [x[y]]\n"), 3);
    }

    /// How deep serde_yaml_ng (libyaml) finds `text` to be: `None` past its own
    /// recursion limit (128), which it applies to whatever it read before any error.
    fn libyaml_depth(text: &str) -> Option<usize> {
        fn deepest(v: &serde_yaml_ng::Value) -> usize {
            use serde_yaml_ng::Value;
            match v {
                Value::Sequence(s) => 1 + s.iter().map(deepest).max().unwrap_or(0),
                Value::Mapping(m) => {
                    let inner = m.iter().map(|(k, v)| deepest(k).max(deepest(v)));
                    1 + inner.max().unwrap_or(0)
                }
                Value::Tagged(t) => deepest(&t.value),
                _ => 0,
            }
        }
        match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
            Ok(v) => Some(deepest(&v)),
            Err(e) if e.to_string().starts_with("recursion limit exceeded") => None,
            Err(e) => panic!("{text:?} is not YAML: {e}"),
        }
    }

    /// The walk and libyaml agree on how deep valid YAML goes, whatever the layout.
    #[test]
    fn agrees_with_libyaml() {
        let texts = [
            include_str!("../../../examples/switchyard.yaml"),
            crate::config::file::tests::CONTRACT,
            "a: 1\n",
            "a:\n  b:\n    - c\n    - d: [e, {f: g}]\n",
            "a:\n- x: 1\n  y:\n  - z\nb: 1\n",
            "- - - x\n- - y\n",
            "? [a, b]\n: c\n",
            "[a, b]: c\n",
            "{a: [1, 2], b: {c: [3]}}\n",
            "a: 'x # y'  # z [\nb: \"q\\\"[\" # ]\n",
            "a: |\n  - [\n  {\nb: >\n  ]\n",
            "a: !!str x\nb: !t [1]\nc: &x [2]\nd: *x\n",
            "a: plain\n  more [ text\nb: [1]\n",
            "---\na: [1]\n...\n",
            "\"a\": {\"b\": [1, 2, {\"c\": null}]}\n",
            "{\"a\":[1,{\"b\":[]}],\"c\":\"[\"}",
            "a:\r\n  b: [1]\r\n",
            "- |\n  x\n- k: |\n    y\n  j: [1]\n",
            "a: [\n  1, 2,\n  [3]\n]\n",
            "- a\n- [b, [c]]\n- {d: [e]}\n",
            "a: 'multi\n  line'\nb:\n  c: [1]\n",
            "a:   # comment\n  b: 1\n",
            "a: b\n# c: [[[[\nd:\n  - e\n",
            "? a\n: [b]\n",
            "a: >\n  folded\n  text [\n\nb: [1]\n",
            "a: |2\n    indented\nb: {c: 1}\n",
            "\"a b\": {\"c\": 1}\n",
            "a: &anchor\n  b: 1\n",
            "- !!map {a: 1}\n",
            "a:\n  - - x\n    - y\n",
            "- - a: [1]\n    b: 2\n  - c\n",
        ];
        for t in texts {
            assert_eq!(Some(depth(t)), libyaml_depth(t), "{t:?}");
        }
    }

    /// Text that libyaml reads as plain or block scalar text, but that opens a quote or
    /// a block scalar if read carelessly, must not hide what libyaml reads after it.
    #[test]
    fn quotes_that_are_not_quotes_hide_nothing() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        // Each is valid YAML; the quote at the end closes what a careless reading
        // would take for a quoted scalar running from the first one.
        let texts = [
            // A continuation line of a plain scalar starting with a quote.
            format!("key: plain\n  'x\ndeep: {deep}\ny: 'z'\n"),
            format!("key: plain\n  \"x\ndeep: {deep}\ny: \"z\"\n"),
            // A quote inside a plain scalar, after a space.
            format!("key: a 'b\ndeep: {deep}\ny: 'z'\n"),
            format!("[a 'b, {deep}, 'z']\n"),
            // A quote in a block scalar.
            format!("key: |\n  'x\ndeep: {deep}\ny: 'z'\n"),
            // Under `- k:` a block scalar must be indented past `k`, not past the dash.
            format!("- k: |\n  deep: {deep}\n"),
            // A quote inside a tag.
            format!("key: !a'b c\ndeep: {deep}\ny: 'z'\n"),
            format!("[!<a,'b> x, {deep}, 'z']\n"),
            // A comment right after a token, with no space before it.
            format!("key: \"a\"#'\ndeep: {deep}\ny: 'z'\n"),
        ];
        for t in &texts {
            assert_eq!(libyaml_depth(t), None, "libyaml reads {t:?} shallow");
            assert!(depth(t) > 200, "{t:?}: {}", depth(t));
        }
    }

    #[test]
    fn stops_at_the_limit_with_the_line_and_key() {
        let e = check(&deep_flow(100_000), 64).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "extra"));
        assert!(check(&deep_flow(63), 64).is_ok());
        assert!(check(&deep_flow(64), 64).is_err());

        let block: String = (0..70)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let e = check(&block, 64).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (65, "k0.k1.k2.k3"));

        let e = check(&format!("- - {}\n", "- ".repeat(100)), 64).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "[0][0][0][0]"));

        let e = check("backends:\n  - address: a:1\n  - tls: [[[[x]]]]\n", 4).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (3, "backends[1].tls"));

        let json = format!(
            "{{\"backends\": [\"a:1\"], \"extra\": {}{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        let e = check(&json, 64).unwrap_err();
        assert_eq!(e.key, "extra");

        let e = check(&format!("{}{}", "[".repeat(70), "]".repeat(70)), 64).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, ""));
    }

    #[test]
    fn a_long_key_is_cut() {
        let key = "k".repeat(100);
        let e = check(&format!("{key}: [[[x]]]\n"), 2).unwrap_err();
        assert_eq!(e.key, format!("{}...", "k".repeat(KEY_CHARS)));
    }

    #[test]
    fn odd_text_is_walked_without_panicking() {
        for t in [
            "\u{FEFF}a: 1\n",
            "a: 1\r\nb:\r\n  c: 2\r\n",
            "a: \u{85}b\u{2028}c\u{2029}",
            "é: [ü, {ö: ä}]\n",
            "%YAML 1.1\n---\na: [1]\n",
            "a: |",
            "a: |2-\n    x\n",
            "a: >+9\n",
            "a: \"unclosed\n",
            "a: 'unclosed",
            "a: \"\\",
            "!",
            "&",
            "a: !<x",
            "]]]]}}}}",
            "\t\t- \t:",
            "- |\n\t x\n",
            "@`%",
            "\0[\0",
        ] {
            let _ = depth(t);
        }
    }
}

#[cfg(test)]
mod random {
    use super::*;

    fn libyaml_depth(v: &serde_yaml_ng::Value) -> usize {
        use serde_yaml_ng::Value;
        match v {
            Value::Sequence(s) => 1 + s.iter().map(libyaml_depth).max().unwrap_or(0),
            Value::Mapping(m) => {
                let inner = m
                    .iter()
                    .map(|(k, v)| libyaml_depth(k).max(libyaml_depth(v)));
                1 + inner.max().unwrap_or(0)
            }
            Value::Tagged(t) => libyaml_depth(&t.value),
            _ => 0,
        }
    }

    /// Random strings of YAML's punctuation: for each one libyaml reads as a document,
    /// the walk finds the depth libyaml does (no aliases among them: `*a` repeats a
    /// node). Seeded, so a failure is found again the same way.
    #[test]
    fn random_text_agrees_with_libyaml() {
        const PIECES: &[&str] = &[
            "[",
            "]",
            "{",
            "}",
            ", ",
            ",",
            ": ",
            ":",
            "- ",
            "-",
            "\n",
            "\n",
            "\n  ",
            "\n- ",
            "  ",
            " ",
            "'",
            "\"",
            "# c",
            "#",
            "| ",
            "|\n",
            ">\n",
            "|2\n",
            "a",
            "b c",
            "?",
            "? ",
            "!t ",
            "&x ",
            "\\",
            "''",
            "\\\"",
            "\t",
            "---\n",
            "...\n",
            "%YAML 1.1\n",
            "k: ",
            "  k: ",
            "- k: ",
            "k:\n",
            "    ",
            "[",
            "{",
            "\r\n",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut documents, mut differ) = (0, Vec::new());
        while documents < ITERATIONS {
            let n = 1 + (next() % 24) as usize;
            let text: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else {
                continue;
            };
            documents += 1;
            if depth(&text) != libyaml_depth(&v) {
                differ.push((text.clone(), depth(&text), libyaml_depth(&v)));
            }
        }
        differ.sort_by_key(|d| d.0.len());
        assert!(
            differ.is_empty(),
            "(text, walk, libyaml): {:?}",
            &differ[..differ.len().min(10)]
        );
    }

    const ITERATIONS: usize = 20_000;
}
