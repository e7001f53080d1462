"""The embedding store: FAISS vectors with stable ids and encoder-version tags, and (with the
service issue) subject metadata, durability, the k-NN vote and k-means.

`index` never imports `encoder` or `service`: it stores vectors with an opaque version tag."""
