# Sourced by the benchmarks that run the scikit-learn reference (from the workspace root):
# makes sure benches/.venv exists with scikit-learn, numpy and scipy, and sets PY to its python.
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/python -c 'import sklearn' 2>/dev/null ||
  benches/.venv/bin/pip install --quiet 'scikit-learn==1.7.*' numpy scipy
PY=benches/.venv/bin/python
