from setuptools import find_packages, setup

setup(
    name="wsgimirror",
    version="0.1.0",
    description="HTTP traffic mirroring (shadowing) middleware for WSGI apps served by gevent",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["wsgimirror", "wsgimirror.*"]),
    package_data={"wsgimirror": ["py.typed"]},
    install_requires=["gevent>=23.9", "urllib3>=2.0,<3", "httptools>=0.6"],
    extras_require={
        # pytest 9.0: Flask's own suite (run by tests/e2e/test_upstream_suites.py) fails under 9.1 and imports
        # what 9.2 removed; 9.0 needs Python 3.10, and 8.4 serves 3.9.
        # ephemeral-port-reserve: Werkzeug's own tests import it.
        "test": [
            "pytest>=9.0,<9.1; python_version >= '3.10'",
            "pytest>=8.3,<8.5; python_version < '3.10'",
            "hypothesis>=6",
            "flask>=2.3",
            "werkzeug>=2.3",
            "gunicorn[gevent]>=21",
            "pytest-timeout>=2",
            "prometheus_client>=0.17",
            "ephemeral-port-reserve>=1.1",
            "trustme>=1.0",
            "django>=4.2",
            "lxml>=4.9",  # reads the DOM headless Chromium renders from the comparison report
            "waitress>=2.1",  # a threaded server whose input is seekable (tests/e2e/test_frameworks.py)
            "webob>=1.8",
            "brotli>=1.1",  # comparison decodes br bodies when a decoder is installed
        ],
        "br": ["brotli>=1.1"],
        "demo": ["flask>=2.3"],
        # what the examples/ directory runs: Flask, gunicorn's gevent worker, Django
        "gunicorn": ["gunicorn[gevent]>=21"],  # its gevent worker imports packaging, in that extra
        "django": ["django>=4.2"],
        "examples": ["flask>=2.3", "gunicorn[gevent]>=21", "django>=4.2"],
        "bench": ["flask>=2.3", "matplotlib>=3.5"],
        "prometheus": ["prometheus_client>=0.17"],
    },
    entry_points={"console_scripts": ["wsgimirror = wsgimirror.commands.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Flask",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Middleware",
    ],
)
