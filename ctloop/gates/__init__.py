"""Gates: the blessing of a challenger against the champion, and readable summaries."""
