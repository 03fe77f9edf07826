//! Translation of Kubernetes objects into core types, done once at the edge.
