"""Training what the engine learns itself (the attention head), and the
feature-map cache that lets one backbone pass serve training and every
scoring variant."""
