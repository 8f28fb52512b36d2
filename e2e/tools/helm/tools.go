//go:build tools

// Package tools pins the Helm CLI the e2e suite lints, templates and installs charts with.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
