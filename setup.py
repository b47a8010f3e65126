from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="spark-retrieval",
    version="0.1.0",
    description="Spark-native training and evaluation of retrieval (recall) models for recommender systems",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["spark_retrieval", "spark_retrieval.*"]),
    package_data={
        "spark_retrieval": ["conf/*"],
        "spark_retrieval.data": ["bundled/*/*"],
        "spark_retrieval.models.two_tower": ["schemas/*.yaml"],
    },
    include_package_data=True,
    install_requires=[
        "pyspark>=4.3,<4.4",
        "pyarrow>=15,<27",
        "numpy>=1.26,<3",
        "pandas>=2.1,<3",
        "scipy>=1.11,<2",
        "boto3>=1.34,<2",
        "pyyaml>=6,<7",
        "matplotlib>=3.8,<4",
        "optuna>=5,<6",
    ],
    extras_require={
        "dev": ["pytest>=8,<10", "moto[server]>=5,<6", "nbclient>=0.10,<1", "nbformat>=5.10,<6", "ipykernel>=6.29,<8", "psutil>=5.9,<8"],
        "torch": ["torch==2.13.0"],
        # Built from source by scripts/install_horovod.sh (needs torch first and a C++17 compiler shim).
        "horovod": ["horovod==0.28.1"],
    },
    entry_points={"console_scripts": ["spark-retrieval=spark_retrieval.cli:main"]},
)
