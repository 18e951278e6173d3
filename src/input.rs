//! Reading events from files and stdin: JSON Lines, a JSON array, or single JSON documents,
//! streamed from a buffered reader so that memory does not grow with the input.
//!
//! The reader only splits: JSON Lines are read straight into blocks of whole lines (buffers
//! handed back through [`Blocks`] when their events are done, so reading allocates a few, not
//! one per read) and handed on unchecked; a block's events share it instead of each copying its
//! line. [`Item::checked`] (run where the event is decided, in parallel when there are several
//! jobs) checks each with [`cutover_pattern::check_json`], which fails exactly where a full
//! parse fails but builds nothing. A torn line is thus a reported failure, never an event a
//! prefilter silently drops. Where an event came from ([`Origin`]) is a shared name and a
//! number, formatted only when it is reported.

use std::fmt;
use std::io::BufRead;
use std::ops::{ControlFlow, Range};
use std::sync::{Arc, Mutex};

use cutover_core::Event;

use serde::Deserializer as _;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Where an event came from: `name:12` (a line), `name[3]` (an array element) or `name`.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    name: Arc<str>,
    place: Place,
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Whole,
    Line(u64),
    Element(u64),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.place {
            Place::Whole => write!(f, "{}", self.name),
            Place::Line(n) => write!(f, "{}:{n}", self.name),
            Place::Element(i) => write!(f, "{}[{i}]", self.name),
        }
    }
}

/// One item read from an input.
#[derive(Debug)]
pub(crate) enum Item {
    /// One event, its bytes unparsed (a JSON Lines event shares its block, and is checked
    /// only by [`Item::checked`]).
    Event { origin: Origin, event: Event },
    /// Something that is not JSON, with where it was.
    Malformed { origin: Origin, message: String },
    /// Whole JSON Lines as read, the first of them line `first` of `name` (`None` when lines
    /// are not numbered: [`LineBlocks::numbered`]): cut into events where they are decided
    /// (by [`Item::events`], or for a summary by [`next_line`]), so that reading does no
    /// per-event work.
    Lines {
        name: Arc<str>,
        first: Option<u64>,
        text: Vec<u8>,
    },
}

impl Item {
    /// The events of this item, in order: a [`Item::Lines`] block gives one per line that is
    /// not blank, and is returned (shared with its events) so that it can be handed back to
    /// [`Blocks`] once they are done; any other item is itself.
    pub(crate) fn into_events(self, mut each: impl FnMut(Item)) -> Option<Arc<Vec<u8>>> {
        let mut events = self.events();
        for event in &mut events {
            each(event);
        }
        events.into_block()
    }

    /// The events of this item one by one, as [`Item::into_events`] gives them (nothing is
    /// collected: an event is cut from its block when it is asked for).
    pub(crate) fn events(self) -> Events {
        match self {
            Item::Lines { name, first, text } => Events::Lines {
                name,
                number: first,
                block: Arc::new(text),
                start: 0,
            },
            other => Events::One(Some(other)),
        }
    }

    /// The item with its syntax checked: an event that is not one JSON document becomes
    /// [`Item::Malformed`], saying where and why.
    pub(crate) fn checked(self) -> Item {
        match self {
            Item::Event { origin, event } => match syntax_error(&origin, &event) {
                None => Item::Event { origin, event },
                Some(message) => Item::Malformed { origin, message },
            },
            other => other,
        }
    }
}

/// The events of one item ([`Item::events`]).
pub(crate) enum Events {
    One(Option<Item>),
    /// The lines of a block from byte `start` on, the first of them line `number` of `name`
    /// (`None`: not numbered).
    Lines {
        name: Arc<str>,
        number: Option<u64>,
        block: Arc<Vec<u8>>,
        start: usize,
    },
}

impl Events {
    /// The block the events were cut from, to hand back to [`Blocks`] once they are done.
    pub(crate) fn into_block(self) -> Option<Arc<Vec<u8>>> {
        match self {
            Events::Lines { block, .. } => Some(block),
            Events::One(_) => None,
        }
    }
}

impl Iterator for Events {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let (name, number, block, start) = match self {
            Events::One(item) => return item.take(),
            Events::Lines {
                name,
                number,
                block,
                start,
            } => (name, number, block, start),
        };
        while let Some(line) = next_line(block, start) {
            let place = number.map_or(Place::Whole, Place::Line);
            if let Some(number) = number {
                *number += 1;
            }
            if !line.is_empty() {
                return Some(Item::Event {
                    origin: Origin {
                        name: name.clone(),
                        place,
                    },
                    event: Event::from_shared(block.clone(), line),
                });
            }
        }
        None
    }
}

/// The line of `block` that starts at byte `*start`, trimmed (empty if it is blank), moving
/// `*start` past it; `None` after the last line, which ends at the end of the block with or
/// without a line end.
pub(crate) fn next_line(block: &[u8], start: &mut usize) -> Option<Range<usize>> {
    if *start > block.len() {
        return None;
    }
    let end = memchr::memchr(b'\n', &block[*start..]).map_or(block.len(), |i| *start + i);
    let line = trimmed(block, *start..end);
    *start = end + 1;
    Some(line)
}

/// Why `event`, read at `origin`, is not one JSON document (see [`Item::checked`]), if it is
/// not.
pub(crate) fn syntax_error(origin: &Origin, event: &Event) -> Option<String> {
    let e = cutover_pattern::check_json(event.raw()).err()?;
    Some(match origin.place {
        Place::Line(n) => format!("line {n}: not valid JSON: {e}"),
        _ => format!("not valid JSON: {e}"),
    })
}

/// `range` of `bytes` without its leading and trailing ASCII whitespace.
fn trimmed(bytes: &[u8], range: Range<usize>) -> Range<usize> {
    let line = &bytes[range.clone()];
    let start = range.start + (line.len() - line.trim_ascii_start().len());
    let end = range.end - (line.len() - line.trim_ascii_end().len());
    start..end.max(start)
}

/// How many bytes a block of lines holds (more when one line is longer).
const BLOCK: usize = 1 << 19;

/// Blocks kept for reuse: enough for the blocks in flight of a few jobs.
const KEPT_BLOCKS: usize = 16;

/// Buffers for blocks of lines, handed back when their events are done: reading reuses them
/// instead of allocating (and having the kernel zero) a fresh one for every read.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Blocks {
    /// A buffer whose whole length is usable (at least [`BLOCK`] bytes).
    fn take(&self) -> Vec<u8> {
        let mut block = self
            .free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default();
        block.resize(block.capacity().max(BLOCK), 0);
        block
    }

    /// Hands a block back once its events are done (one still shared is left to be freed, and
    /// so is one a long line grew: blocks stay the size of a read).
    pub(crate) fn give(&self, block: Arc<Vec<u8>>) {
        if let (Ok(block), Ok(mut free)) = (Arc::try_unwrap(block), self.free.lock())
            && free.len() < KEPT_BLOCKS
            && block.capacity() <= 2 * BLOCK
        {
            free.push(block);
        }
    }
}

/// Reads the events of `input` (called `name` in origins, with line numbers if `numbered`),
/// handing each to `each` as soon as it is read, until the input ends or `each` breaks.
///
/// An input starting with `[` is a JSON array of events, read element by element; one that
/// holds a single JSON document is one event; anything else is JSON Lines, where each
/// malformed line is reported with its number and the others still count. Only a document
/// whose first line is not JSON on its own (a pretty-printed event) is read whole, to tell it
/// from JSON Lines whose first line is torn.
pub(crate) fn read_events<B>(
    name: &str,
    input: impl BufRead,
    numbered: bool,
    blocks: &Blocks,
    mut each: impl FnMut(Item) -> ControlFlow<B>,
) -> std::io::Result<ControlFlow<B>> {
    match start_events(name, input, &mut each)? {
        Started::Ended(flow) => Ok(flow),
        Started::Lines(lines) => {
            let mut lines = lines.numbered(numbered);
            while let Some(block) = lines.next_block(blocks)? {
                if let ControlFlow::Break(b) = each(block) {
                    return Ok(ControlFlow::Break(b));
                }
            }
            Ok(ControlFlow::Continue(()))
        }
    }
}

/// How far [`start_events`] read.
pub(crate) enum Started<R, B> {
    /// To the end of the input, or until `each` broke: an array, one document, nothing.
    Ended(ControlFlow<B>),
    /// JSON Lines: the first line went to `each`; the rest is read block by block.
    Lines(LineBlocks<R>),
}

/// Reads the start of `input` (see [`read_events`]): an array, a single document or an empty
/// input to the end, handing its events to `each`; of JSON Lines only the first line, leaving
/// the rest to the returned [`LineBlocks`] — which whoever decides the blocks may read in
/// turn, block after block.
pub(crate) fn start_events<R: BufRead, B>(
    name: &str,
    mut input: R,
    mut each: impl FnMut(Item) -> ControlFlow<B>,
) -> std::io::Result<Started<R, B>> {
    let name: Arc<str> = Arc::from(name);
    let at = |place| Origin {
        name: name.clone(),
        place,
    };
    let mut line = Vec::new();
    let mut number = 0u64;
    // Leading blank lines, and the shape.
    loop {
        let buffered = input.fill_buf()?;
        let Some(start) = buffered.iter().position(|b| !b.is_ascii_whitespace()) else {
            if buffered.is_empty() {
                return Ok(Started::Ended(ControlFlow::Continue(())));
            }
            number += newlines(buffered);
            let all = buffered.len();
            input.consume(all);
            continue;
        };
        number += newlines(&buffered[..start]);
        let opens_array = buffered[start] == b'[';
        input.consume(start);
        if opens_array {
            return read_array(input, number, &at, each).map(Started::Ended);
        }
        input.read_until(b'\n', &mut line)?;
        number += 1;
        break;
    }
    let first = line.trim_ascii();
    if cutover_pattern::check_json(first).is_err() {
        let mut text = line;
        input.read_to_end(&mut text)?;
        if serde_json::from_slice::<IgnoredAny>(&text).is_ok() {
            return Ok(Started::Ended(each(Item::Event {
                origin: at(Place::Whole),
                event: Event::from_bytes(text.trim_ascii()),
            })));
        }
        // Torn JSON Lines, read whole already: their lines go on from here.
        return Ok(Started::Lines(LineBlocks {
            input: Rest::Text(std::io::Cursor::new(text)),
            name,
            number: number - 1,
            numbered: true,
            carry: Vec::new(),
            ended: false,
        }));
    }
    // A first line followed by nothing but blanks is a one-document input.
    let mut blank_lines = 0;
    let alone = loop {
        let buffered = input.fill_buf()?;
        if buffered.is_empty() {
            break true;
        }
        let blank = buffered.iter().position(|b| !b.is_ascii_whitespace());
        let end = blank.unwrap_or(buffered.len());
        blank_lines += newlines(&buffered[..end]);
        input.consume(end);
        if blank.is_some() {
            break false;
        }
    };
    let place = if alone { Place::Whole } else { Place::Line(number) };
    if let ControlFlow::Break(b) = each(Item::Event {
        origin: at(place),
        event: Event::from_bytes(first),
    }) {
        return Ok(Started::Ended(ControlFlow::Break(b)));
    }
    // What the reader holds already comes first; then reads bypass its buffer.
    let carry = input.fill_buf()?.to_vec();
    input.consume(carry.len());
    Ok(Started::Lines(LineBlocks {
        input: Rest::Reader(input),
        name,
        number: number + blank_lines,
        numbered: true,
        carry,
        ended: false,
    }))
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// What is left of an input after its first line: the reader, or the text already read.
enum Rest<R> {
    Reader(R),
    Text(std::io::Cursor<Vec<u8>>),
}

impl<R: std::io::Read> std::io::Read for Rest<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Rest::Reader(input) => input.read(buf),
            Rest::Text(text) => text.read(buf),
        }
    }
}

/// The JSON Lines of an input after its first line, handed on in blocks of whole lines
/// ([`Item::Lines`]) as they are read: each read goes straight into a block (after the part
/// line the last one ended with); reading only finds the last line end and, if lines are
/// numbered, counts them.
pub(crate) struct LineBlocks<R> {
    input: Rest<R>,
    name: Arc<str>,
    /// Lines before the next block.
    number: u64,
    /// Whether blocks say which line they start at (lines are counted as they are read).
    numbered: bool,
    /// The part line the last block did not take.
    carry: Vec<u8>,
    ended: bool,
}

impl<R: std::io::Read> LineBlocks<R> {
    /// The same blocks, with line numbers (the default) or without: then lines are not
    /// counted, and their events' origins are the input's name alone (for a reader that
    /// reports no origin, as a summary does).
    pub(crate) fn numbered(mut self, numbered: bool) -> Self {
        self.numbered = numbered;
        self
    }

    /// The next block of whole lines, or `None` at the end of the input.
    pub(crate) fn next_block(&mut self, blocks: &Blocks) -> std::io::Result<Option<Item>> {
        while !self.ended {
            let carry = &mut self.carry;
            let mut block = blocks.take();
            if block.len() < carry.len() + BLOCK / 2 {
                block.resize(carry.len() + BLOCK / 2, 0);
            }
            block[..carry.len()].copy_from_slice(carry);
            let mut filled = carry.len();
            // Read until the block holds a line end (one read, unless a line outgrows the
            // block); whole lines the reader held already go on at once (a live stream's
            // first lines must not wait for the next).
            let holds_line = memchr::memchr(b'\n', carry).is_some();
            carry.clear();
            if !holds_line {
                loop {
                    if filled == block.len() {
                        block.resize(block.len() * 2, 0);
                    }
                    let read = match std::io::Read::read(&mut self.input, &mut block[filled..]) {
                        Ok(read) => read,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    if read == 0 {
                        self.ended = true;
                        break;
                    }
                    let line_end = memchr::memchr(b'\n', &block[filled..filled + read]).is_some();
                    filled += read;
                    if line_end {
                        break;
                    }
                }
            }
            let whole = if self.ended {
                filled
            } else {
                memchr::memrchr(b'\n', &block[..filled]).map_or(0, |last| last + 1)
            };
            carry.extend_from_slice(&block[whole..filled]);
            block.truncate(whole);
            if !block.is_empty() {
                let first = self.numbered.then_some(self.number + 1);
                if self.numbered {
                    self.number += memchr::memchr_iter(b'\n', &block).count() as u64;
                }
                return Ok(Some(Item::Lines {
                    name: self.name.clone(),
                    first,
                    text: block,
                }));
            }
        }
        Ok(None)
    }
}

impl LineBlocks<std::io::BufReader<std::fs::File>> {
    /// The rest of a file as ranges that the threads deciding them read each on its own
    /// ([`FileRanges`]), when lines are not numbered (else, and for the text of a torn first
    /// line already read whole, the blocks themselves).
    pub(crate) fn into_ranges(self) -> std::io::Result<Result<FileRanges, Self>> {
        let reader = match self.input {
            Rest::Reader(reader) if !self.numbered && cfg!(any(unix, windows)) => reader,
            input => return Ok(Err(LineBlocks { input, ..self })),
        };
        // Where the rest starts: what was read from the file, less what the reader and the
        // part line still hold (read again, with the rest).
        let held = (reader.buffer().len() + self.carry.len()) as u64;
        let mut file = reader.into_inner();
        let next = std::io::Seek::stream_position(&mut file)?.saturating_sub(held);
        let len = file.metadata()?.len();
        Ok(Ok(FileRanges {
            name: self.name,
            file: Arc::new(file),
            next,
            len,
            size: RANGE,
            at_line: true,
        }))
    }
}

/// How many bytes of a file a [`FileRange`] covers: a block's worth, less room for the end of
/// its last line, which it reads past its end ([`TAIL`] bytes at a time, at first).
const RANGE: u64 = (BLOCK - BLOCK / 16) as u64;

/// The first read past a range's end, for the rest of its last line.
const TAIL: usize = 4096;

/// The JSON Lines of a regular file from `next` on, cut into ranges of bytes that any thread
/// reads at their offset, with no lock held and no other range read first: a range holds the
/// lines that start in it. Lines are not numbered (a line's number needs the lines before it
/// counted).
pub(crate) struct FileRanges {
    name: Arc<str>,
    file: Arc<std::fs::File>,
    next: u64,
    /// The file's length when it was opened: lines that start after it (written since) are
    /// not read.
    len: u64,
    size: u64,
    /// Whether a line starts at `next` (the first range starts where the shape was told).
    at_line: bool,
}

impl FileRanges {
    /// Ranges of `size` bytes (tests cut a file into many).
    #[cfg(test)]
    fn sized(mut self, size: u64) -> Self {
        self.size = size.max(1);
        self
    }

    /// The next range, or `None` when the file is covered.
    pub(crate) fn next_range(&mut self) -> Option<FileRange> {
        if self.next >= self.len {
            return None;
        }
        let start = self.next;
        self.next = start.saturating_add(self.size).min(self.len);
        Some(FileRange {
            name: self.name.clone(),
            file: self.file.clone(),
            start,
            end: self.next,
            at_line: std::mem::replace(&mut self.at_line, false),
        })
    }
}

/// Bytes `start..end` of a file, and the lines that start there ([`FileRanges`]).
pub(crate) struct FileRange {
    name: Arc<str>,
    file: Arc<std::fs::File>,
    start: u64,
    end: u64,
    at_line: bool,
}

impl FileRange {
    /// The file's name, as reports give it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The lines that start in this range, as a block of lines: the last of them read to its
    /// end past the range.
    pub(crate) fn read(&self, blocks: &Blocks) -> std::io::Result<Item> {
        let mut block = blocks.take();
        // From the byte before the range: a line starts at the range's first byte if that one
        // ends a line.
        let from = if self.at_line { self.start } else { self.start - 1 };
        let want = usize::try_from(self.end - from).unwrap_or(usize::MAX);
        if block.len() < want {
            block.resize(want, 0);
        }
        let mut filled = self.read_at(&mut block[..want], from)?;
        // The part line that the range before reads is blanked out, its line end with it: the
        // block's first line is then its first whole line, led by blanks (which lines are
        // trimmed of). A range where no line starts gives none.
        if !self.at_line {
            let head = memchr::memchr(b'\n', &block[..filled]).map_or(filled, |i| i + 1);
            if head == filled {
                block.truncate(0);
                return Ok(self.lines(block));
            }
            block[..head].fill(b' ');
        }
        // The last line goes on past the range unless the range ends a line: read on a few
        // lines' worth at a time (more for a long line).
        let mut open = filled == want && block[filled - 1] != b'\n';
        let mut more = TAIL;
        while open {
            if block.len() < filled + more {
                block.resize(filled + more, 0);
            }
            let read = self.read_at(&mut block[filled..filled + more], from + filled as u64)?;
            more = more.saturating_mul(2).min(BLOCK);
            match memchr::memchr(b'\n', &block[filled..filled + read]) {
                Some(i) => {
                    filled += i + 1;
                    open = false;
                }
                None => {
                    filled += read;
                    open = read > 0;
                }
            }
        }
        block.truncate(filled);
        Ok(self.lines(block))
    }

    fn lines(&self, text: Vec<u8>) -> Item {
        Item::Lines {
            name: self.name.clone(),
            first: None,
            text,
        }
    }

    /// Fills `buf` from byte `at` of the file, short only at its end; the bytes read.
    fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match read_file_at(&self.file, &mut buf[filled..], at + filled as u64) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// Reads into `buf` from byte `at` of `file`, whatever other threads read of it meanwhile.
fn read_file_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_at(file, buf, at);
    #[cfg(windows)]
    return std::os::windows::fs::FileExt::seek_read(file, buf, at);
    #[cfg(not(any(unix, windows)))]
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A JSON array, element by element. An array torn part-way has its elements up to the tear
/// decided and the tear reported.
fn read_array<B>(
    input: impl BufRead,
    lines_before: u64,
    at: &impl Fn(Place) -> Origin,
    mut each: impl FnMut(Item) -> ControlFlow<B>,
) -> std::io::Result<ControlFlow<B>> {
    struct Elements<'f, F>(&'f mut F);
    impl<'de, B, F: FnMut(u64, Box<RawValue>) -> ControlFlow<B>> Visitor<'de> for Elements<'_, F> {
        type Value = ControlFlow<B>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut i = 0;
            while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
                if let ControlFlow::Break(b) = (self.0)(i, raw) {
                    return Ok(ControlFlow::Break(b));
                }
                i += 1;
            }
            Ok(ControlFlow::Continue(()))
        }
    }
    let mut send = |i: u64, raw: Box<RawValue>| {
        let bytes: Box<[u8]> = Box::<str>::from(raw).into_boxed_bytes();
        each(Item::Event {
            origin: at(Place::Element(i)),
            event: Event::from_bytes(bytes),
        })
    };
    let mut reader = serde_json::Deserializer::from_reader(input);
    let result = reader
        .deserialize_seq(Elements(&mut send))
        .and_then(|flow| reader.end().map(|()| flow));
    match result {
        Ok(flow) => Ok(flow),
        Err(e) if e.is_io() => Err(e.into()),
        Err(e) => Ok(each(Item::Malformed {
            origin: at(Place::Line(lines_before + e.line() as u64)),
            message: format!("not a valid JSON array of events: {e}"),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_with(input: impl BufRead) -> Vec<Item> {
        read_numbered(input, true)
    }

    fn read_numbered(input: impl BufRead, numbered: bool) -> Vec<Item> {
        let mut items = Vec::new();
        let flow = read_events("t", input, numbered, &Blocks::default(), |item| {
            item.into_events(|event| items.push(event.checked()));
            ControlFlow::<()>::Continue(())
        });
        assert!(matches!(flow, Ok(ControlFlow::Continue(()))));
        items
    }

    /// Reads `text` whole and through a tiny buffer (every line straddling fills), which must
    /// come out the same.
    fn read(text: &[u8]) -> Vec<Item> {
        let items = read_with(text);
        let small = read_with(std::io::BufReader::with_capacity(3, text));
        assert_eq!(summary(&items), summary(&small));
        items
    }

    fn summary(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Event { origin, event } => {
                    format!("ok {origin} {}", String::from_utf8_lossy(event.raw()))
                }
                Item::Malformed { origin, .. } => format!("bad {origin}"),
                Item::Lines { first, .. } => format!("lines from {first:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_the_three_shapes() {
        assert_eq!(
            summary(&read(b"{\"id\":1}\n{\"id\":2}\n")),
            ["ok t:1 {\"id\":1}", "ok t:2 {\"id\":2}"]
        );
        assert_eq!(
            summary(&read(b" [{\"id\":1}, {\"id\": 2}]\n")),
            ["ok t[0] {\"id\":1}", "ok t[1] {\"id\": 2}"]
        );
        assert_eq!(summary(&read(b"\n{\n \"id\": 1\n}\n")), ["ok t {\n \"id\": 1\n}"]);
        assert_eq!(summary(&read(b"{\"id\":1}\n\n")), ["ok t {\"id\":1}"]);
        assert!(read(b"").is_empty());
        assert!(read(b" \n\n  ").is_empty());
    }

    #[test]
    fn malformed_lines_are_reported_and_others_kept() {
        let items = read(b"\n{\"id\":1}\n{\"id\": \n\n {\"id\":3} \r\n");
        assert_eq!(
            summary(&items),
            ["ok t:2 {\"id\":1}", "bad t:3", "ok t:5 {\"id\":3}"]
        );
        let Item::Malformed { message, .. } = &items[1] else {
            unreachable!()
        };
        assert!(message.starts_with("line 3: not valid JSON"), "{message}");
    }

    #[test]
    fn a_torn_first_line_is_reported_with_the_lines_after_it() {
        let items = read(b"{\"id\": \n{\"id\":2}\n");
        assert_eq!(summary(&items), ["bad t:1", "ok t:2 {\"id\":2}"]);
    }

    #[test]
    fn a_torn_array_keeps_the_elements_before_the_tear_and_reports_it() {
        let items = read(b"[{\"id\":1},\n{\"id\":2},\n{\"id\"");
        assert_eq!(
            summary(&items),
            ["ok t[0] {\"id\":1}", "ok t[1] {\"id\":2}", "bad t:3"]
        );
        let items = read(b"[{\"id\":1}] trailing");
        assert_eq!(summary(&items), ["ok t[0] {\"id\":1}", "bad t:1"]);
    }

    #[test]
    fn a_line_longer_than_a_block_is_one_event() {
        let long = format!("{{\"id\":\"{}\"}}", "x".repeat(3 * BLOCK));
        let text = format!("{{\"id\":1}}\n{long}\n{{\"id\":3}}\n");
        let input = std::io::BufReader::with_capacity(64, text.as_bytes());
        let items = read_with(input);
        assert_eq!(items.len(), 3);
        let Item::Event { origin, event } = &items[1] else {
            panic!("{:?}", summary(&items))
        };
        assert_eq!(origin.to_string(), "t:2");
        assert_eq!(event.raw(), long.as_bytes());
    }

    /// Without line numbers, the lines after the first are the same events, and a torn one is
    /// still found: only their origins are the input's name alone.
    #[test]
    fn unnumbered_lines_are_the_same_events_named_by_their_input_alone() {
        let text = b"{\"id\":1}\n\n{\"id\":2}\n{\"id\":\n{\"id\":3}\n";
        assert_eq!(
            summary(&read_numbered(&text[..], true)),
            [
                "ok t:1 {\"id\":1}",
                "ok t:3 {\"id\":2}",
                "bad t:4",
                "ok t:5 {\"id\":3}"
            ]
        );
        let unnumbered = ["ok t:1 {\"id\":1}", "ok t {\"id\":2}", "bad t", "ok t {\"id\":3}"];
        assert_eq!(summary(&read_numbered(&text[..], false)), unnumbered);
        let small = std::io::BufReader::with_capacity(3, &text[..]);
        assert_eq!(summary(&read_numbered(small, false)), unnumbered);
    }

    #[test]
    fn a_block_is_shared_by_its_events_and_reused_once_they_are_done() {
        let blocks = Blocks::default();
        let mut events = Vec::new();
        let mut read = Vec::new();
        let text = b"{\"id\":1}\n{\"id\":2}\n".repeat(100);
        let flow = read_events("t", &text[..], true, &blocks, |item| {
            read.extend(item.into_events(|event| events.push(event)));
            ControlFlow::<()>::Continue(())
        });
        assert!(flow.is_ok());
        assert_eq!((events.len(), read.len()), (200, 1));
        let block = read.pop().unwrap();
        let at = block.as_ptr();
        // Still shared with events: not kept for reuse.
        blocks.give(block.clone());
        assert!(blocks.free.lock().unwrap().is_empty());
        drop(events);
        blocks.give(block);
        let again = blocks.take();
        assert_eq!(again.as_ptr(), at);
        assert!(again.len() >= BLOCK);
    }

    #[test]
    fn lines_the_reader_holds_go_on_before_it_reads_again() {
        // A live stream: two lines arrive, then nothing until the consumer has them both.
        struct Live {
            reads: usize,
            seen: Arc<Mutex<usize>>,
        }
        impl std::io::Read for Live {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.reads += 1;
                if self.reads == 1 {
                    let chunk = b"{\"id\":1}\n{\"id\":2}\n";
                    buf[..chunk.len()].copy_from_slice(chunk);
                    return Ok(chunk.len());
                }
                assert_eq!(
                    *self.seen.lock().unwrap(),
                    2,
                    "read again before the lines went on"
                );
                Ok(0)
            }
        }
        let seen = Arc::new(Mutex::new(0));
        let live = Live {
            reads: 0,
            seen: seen.clone(),
        };
        let flow = read_events(
            "t",
            std::io::BufReader::new(live),
            true,
            &Blocks::default(),
            |item| {
                item.into_events(|_| *seen.lock().unwrap() += 1);
                ControlFlow::<()>::Continue(())
            },
        );
        assert!(matches!(flow, Ok(ControlFlow::Continue(()))));
        assert_eq!(*seen.lock().unwrap(), 2);
    }

    #[test]
    fn a_block_a_long_line_grew_is_not_kept() {
        let blocks = Blocks::default();
        blocks.give(Arc::new(vec![0; 4 * BLOCK]));
        assert!(blocks.free.lock().unwrap().is_empty());
        blocks.give(Arc::new(vec![0; BLOCK]));
        assert_eq!(blocks.free.lock().unwrap().len(), 1);
    }

    #[test]
    fn reading_stops_when_the_consumer_breaks() {
        // Nothing is read past the item the consumer stopped at (the first line, then blocks).
        let text = b"{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n".repeat(BLOCK / 8);
        let input = std::io::BufReader::with_capacity(16, &text[..]);
        let mut seen = 0;
        let flow = read_events("t", input, true, &Blocks::default(), |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert!(matches!(flow, Ok(ControlFlow::Break(()))));
        assert_eq!(seen, 3);
    }

    /// `text` in a file, read after its first line as ranges of `size` bytes taken in the
    /// order `order` gives (they need no other read first), their events in file order.
    fn read_in_ranges(text: &[u8], size: u64, order: impl Fn(usize) -> usize) -> Vec<Item> {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, text).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let mut items = Vec::new();
        let input = std::io::BufReader::with_capacity(8, file);
        let started = start_events("t", input, |item| {
            items.push(item.checked());
            ControlFlow::<()>::Continue(())
        });
        let Ok(Started::Lines(lines)) = started else {
            return items;
        };
        let Ok(Ok(mut ranges)) = lines.numbered(false).into_ranges() else {
            panic!("a file's unnumbered lines are read in ranges");
        };
        ranges = ranges.sized(size);
        let ranges: Vec<FileRange> = std::iter::from_fn(|| ranges.next_range()).collect();
        let blocks = Blocks::default();
        let mut read: Vec<Option<Item>> = ranges.iter().map(|_| None).collect();
        let mut ranges: Vec<Option<FileRange>> = ranges.into_iter().map(Some).collect();
        for k in 0..ranges.len() {
            let k = order(k) % ranges.len();
            let Some(range) = ranges[k].take() else {
                continue;
            };
            read[k] = Some(range.read(&blocks).unwrap());
        }
        for (k, range) in ranges.into_iter().enumerate() {
            if let Some(range) = range {
                read[k] = Some(range.read(&blocks).unwrap());
            }
        }
        for block in read.into_iter().flatten() {
            block.into_events(|event| items.push(event.checked()));
        }
        items
    }

    /// Any range size, ranges read in any order: the same events as one reader reading on,
    /// whatever straddles where (lines longer than a range, blank lines, a torn line, a last
    /// line without its line end, CRLF).
    #[test]
    fn a_file_read_in_ranges_gives_the_events_read_in_blocks() {
        let long = format!("{{\"id\":\"{}\"}}", "x".repeat(40));
        // Longer than the first read past a range's end.
        let longer = format!("{{\"id\":\"{}\"}}", "x".repeat(3 * TAIL));
        let texts = [
            format!("{{\"id\":0}}\n{longer}\n{{\"id\":2}}\n{longer}"),
            format!("{{\"id\":1}}\n{{\"id\":2}}\n\n  \n{long}\n{{\"id\":\n{{\"id\":4}}\r\n{long}"),
            format!("{{\"id\":0}}\n\n\n{long}\n{long}\n{{\"id\":5}}\n"),
            "{\"id\":1}\n{\"id\":2}".to_owned(),
            "{\"id\":1}\n \n".to_owned(),
            "{\"id\":1}\n{\"id\":2}\n".repeat(20),
        ];
        for text in &texts {
            let whole = summary(&read_numbered(text.as_bytes(), false));
            // Ranges of a byte or two only where that makes few of them.
            let smallest = if text.len() > 1000 { 100 } else { 1 };
            for size in [1, 2, 3, 5, 8, 13, 41, 42, 43, 100, 4099, 1 << 20] {
                if size < smallest {
                    continue;
                }
                for (how, order) in [
                    ("in order", (|k| k) as fn(usize) -> usize),
                    ("backwards", |k| usize::MAX - k),
                    ("strided", |k| k * 7),
                ] {
                    let ranged = summary(&read_in_ranges(text.as_bytes(), size, order));
                    assert_eq!(ranged, whole, "{text:?} in ranges of {size}, {how}");
                }
            }
        }
    }

    #[test]
    fn numbered_lines_and_a_torn_first_line_are_not_read_in_ranges() {
        let blocks_of = |text: &[u8], numbered: bool| {
            let mut file = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut file, text).unwrap();
            std::io::Seek::rewind(&mut file).unwrap();
            let input = std::io::BufReader::new(file);
            let Ok(Started::Lines(lines)) = start_events("t", input, |_| ControlFlow::<()>::Continue(()))
            else {
                panic!("JSON Lines");
            };
            lines.numbered(numbered).into_ranges().unwrap().is_err()
        };
        assert!(blocks_of(b"{\"id\":1}\n{\"id\":2}\n", true));
        assert!(!blocks_of(b"{\"id\":1}\n{\"id\":2}\n", false));
        // Read whole already, to tell it from a pretty-printed document.
        assert!(blocks_of(b"{\"id\": \n{\"id\":2}\n", false));
    }
}
