# What run.sh and local/evidence.sh share (sourced by both): the corpus, its sets and the token type.
corpus=downloads/homophones
smoke_corpus=downloads/homophones_smoke
train_set=train_clean
valid_set=dev_clean
test_sets="dev_clean test_clean"
token_type=char
