//! kube-rs watchers that feed the cluster view.
