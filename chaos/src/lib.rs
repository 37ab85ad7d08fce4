//! feral-chaos: fault scenarios against real processes (lands with the [chaos] issue).
