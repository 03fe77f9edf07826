//! The scheduler-extender webhook: routes and handlers.
