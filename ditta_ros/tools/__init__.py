"""Command-line tools (ditta-synth, ditta-make-bag, ditta-eval, ditta-bench, ditta-demo, ...)."""
