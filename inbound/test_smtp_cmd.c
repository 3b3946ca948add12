/* placeholder: being written; fails until it is */
int main(void);
int main(void) { return 1; }
