"""The demo: data, model, training, and its command line (`python -m jaxconv.demo`)."""
