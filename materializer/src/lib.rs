//! feral-materializer: projects the `episodes` table from the log (lands with the [store] issue).
